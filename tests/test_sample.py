"""launch/sample.py: samples of a run's generator and translations of the user's own images.

    python -m pytest -q tests/test_sample.py

Tiny runs of the real recipes (a few steps each, in this process), sampled through sample.py's main();
the files are compared pixel for pixel with the family's own generate/translate on the same inputs.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_CLS, TINY_GAN, script, train
from test_image2image import TINY_CYCLE, TINY_STAR, faces  # noqa: F401 - faces: a fixture (CelebA layout)

from distgen import recipes
from distgen.checkpoint import load_run
from distgen.data import DataInfo
from distgen.errors import ConfigError
from distgen.families import FAMILIES
from distgen.families.base import Condition
from distgen.generation import generate, sampler, to_uint8

STEPS = ["train.steps=2", "run.checkpoint_every=2", "log.every=1", "log.sample_every=100"]


def sample(*argv) -> tuple[int, str]:
    """(exit status, stderr) of `python launch/sample.py ARGV`, run in this process on the CPU."""
    result = script("sample", *map(str, argv), "--device", "cpu")
    return result.returncode, result.stderr


def pixels(path) -> np.ndarray:
    """H W C uint8 of a PNG as written (grey: C = 1)."""
    array = np.asarray(Image.open(path))
    return array[..., None] if array.ndim == 2 else array


def error_line(stderr: str) -> str:
    """The one error line sample.py printed (library warnings aside); fails on a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def acgan(digits, tmp_path_factory):
    """A quickstart (ACGAN, with the generator EMA) run of 2 steps."""
    run_dir = tmp_path_factory.mktemp("runs") / "acgan"
    train("quickstart", *TINY_GAN, *STEPS, f"data.root={digits}", f"run.dir={run_dir}")
    return run_dir


@pytest.fixture(scope="module")
def cyclegan(digits, digits_m, tmp_path_factory):
    """recipes/cyclegan_digits_smoke.yaml for 2 steps: grey digits (A) <-> RGB digits-m (B)."""
    run_dir = tmp_path_factory.mktemp("runs") / "cyclegan"
    train("cyclegan_digits_smoke", *TINY_CYCLE, *STEPS, f"data.domain_a={digits}", f"data.domain_b={digits_m}",
          f"run.dir={run_dir}")
    return run_dir


@pytest.fixture(scope="module")
def user_images(tmp_path_factory):
    """The user's own images: other sizes than the runs' 32 px, not square, grey, RGB, RGBA, JPEG."""
    folder = tmp_path_factory.mktemp("mine")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(folder / "small_grey.png")
    Image.fromarray(rng.integers(0, 256, (90, 64, 4), dtype=np.uint8)).save(folder / "rgba.png")
    (folder / "notes.txt").write_text("not an image: left alone")
    return folder


# ----------------------------------------------------------------------------- sampling


def test_class_samples_are_the_generators_images_of_that_class(acgan, tmp_path):
    assert sample(acgan, "--class", "3", "--num", 10, "--seed", 5, "--out", tmp_path / "three")[0] == 0
    files = sorted((tmp_path / "three").iterdir())
    assert [f.name for f in files] == [f"sample_{i}.png" for i in range(10)]  # --num files
    _, family, _ = load_run(acgan, device="cpu")  # the EMA generator, as sample.py takes by default
    z = family.noise(10, torch.Generator().manual_seed(5))
    expected = to_uint8(generate(family, family.nets["G"], {"z": z, "y": torch.full((10,), 3)})).numpy()
    assert np.array_equal(np.stack([pixels(f) for f in files]), expected)  # exactly G(z, class 3), 32 px grey
    # the class is the class name as much as the index, and it reaches G: class 4 draws other images
    name = family.info.class_names[3]
    assert sample(acgan, "--class", name, "--num", 10, "--seed", 5, "--out", tmp_path / "named")[0] == 0
    assert all(np.array_equal(pixels(f), pixels(tmp_path / "named" / f.name)) for f in files)
    assert sample(acgan, "--class", "4", "--num", 10, "--seed", 5, "--out", tmp_path / "four")[0] == 0
    assert not np.array_equal(pixels(files[0]), pixels(tmp_path / "four" / files[0].name))


def test_samples_come_from_the_ema_unless_no_ema(acgan, tmp_path):
    assert sample(acgan, "--num", 4, "--out", tmp_path / "ema")[0] == 0
    assert sample(acgan, "--num", 4, "--no-ema", "--out", tmp_path / "raw")[0] == 0
    _, raw, _ = load_run(acgan, device="cpu", use_ema=False)
    inputs = raw.eval_inputs(4, 0)  # no --class: the classes in turn, as evaluate.py samples
    expected = to_uint8(generate(raw, raw.nets["G"], inputs)).numpy()
    assert np.array_equal(np.stack([pixels(tmp_path / "raw" / f"sample_{i}.png") for i in range(4)]), expected)
    assert not np.array_equal(pixels(tmp_path / "ema" / "sample_0.png"), expected[0])


def test_grid_is_one_file_and_nothing_is_overwritten(acgan, tmp_path):
    assert sample(acgan, "--num", 10, "--grid", "--out", tmp_path)[0] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
    assert Image.open(tmp_path / "grid.png").size == (2 + 4 * 34, 2 + 3 * 34)  # 10 images, 4 a row
    before = pixels(tmp_path / "grid.png")
    code, err = sample(acgan, "--num", 10, "--grid", "--seed", 1, "--out", tmp_path)
    assert code == 2 and "--overwrite" in error_line(err) and np.array_equal(pixels(tmp_path / "grid.png"), before)
    assert sample(acgan, "--num", 10, "--grid", "--seed", 1, "--out", tmp_path, "--overwrite")[0] == 0
    assert not np.array_equal(pixels(tmp_path / "grid.png"), before)


def family(name: str, info: DataInfo, **model):
    return FAMILIES[name](recipes.from_dict({"family": name, "model": {"z_dim": 8, "width": 8, **model}}), info)


def test_cgan_takes_a_class_name_or_its_hair_and_eye_tags():
    anime = DataInfo(32, 3, tuple(f"{h} hair {e} eyes" for h in "ab" for e in "xyz"), (), {}, {},
                     {"hair": ["a", "b"], "eye": ["x", "y", "z"]})
    fam = family("cgan", anime)
    assert fam.sample_inputs(4, 0, Condition(cls="b hair y eyes"))["y"].tolist() == [4] * 4  # b * 3 + y
    assert fam.sample_inputs(4, 0, Condition(attrs=(("hair", "b"), ("eye", "y"))))["y"].tolist() == [4] * 4
    eyes = fam.sample_inputs(60, 0, Condition(attrs=(("eye", "z"),)))["y"]  # hair left out: drawn per image
    assert set(eyes.tolist()) == {2, 5}
    with pytest.raises(ConfigError, match="valid eye tags: x, y, z"):
        fam.sample_inputs(4, 0, Condition(attrs=(("eye", "green"),)))


def test_attribute_acgan_sets_the_given_attributes_and_draws_the_rest():
    fam = family("acgan", DataInfo(32, 3, (), ("Smiling", "Male"), {}, {}), condition="attrs")
    c = fam.sample_inputs(40, 0, Condition(attrs=(("Smiling", "1"),)))["c"]
    assert c[:, 0].tolist() == [1.0] * 40 and set(c[:, 1].tolist()) == {0.0, 1.0}
    with pytest.raises(ConfigError, match="Smiling=2; an attribute is 0 .off. or 1 .on."):
        fam.sample_inputs(4, 0, Condition(attrs=(("Smiling", "2"),)))
    with pytest.raises(ConfigError, match="--class: this acgan run is conditioned on attributes"):
        fam.sample_inputs(4, 0, Condition(cls="1"))


# ----------------------------------------------------------------------------- translation


@pytest.mark.parametrize("direction, channels", [("a2b", 3), ("b2a", 1)])
def test_cyclegan_translates_each_input_image(cyclegan, user_images, tmp_path, direction, channels):
    out = tmp_path / "folder"
    assert sample(cyclegan, "--input", user_images, "--direction", direction, "--out", out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo.png", "rgba.png", "small_grey.png"]
    assert all(pixels(p).shape == (32, 32, channels) for p in out.iterdir())  # the run's size, the target's channels
    # one file: the same image as in the folder, and G's translation of the image resized to the run's size
    assert sample(cyclegan, "--input", user_images / "photo.jpg", "--direction", direction,
                  "--out", tmp_path / "one")[0] == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["photo.png"]
    assert np.array_equal(pixels(tmp_path / "one" / "photo.png"), pixels(out / "photo.png"))
    _, family, _ = load_run(cyclegan, device="cpu")
    source = 1 if direction == "a2b" else 3  # grey digits -> digits-m, and back
    image = Image.open(user_images / "photo.jpg").convert({1: "L", 3: "RGB"}[source])
    side = min(image.size)  # the largest centre square (50 x 50 of 70 x 50), resized to 32 px
    image = image.crop(((image.width - side) // 2, (image.height - side) // 2,
                        (image.width - side) // 2 + side, (image.height - side) // 2 + side))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32).reshape(side, side, source)).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x / 127.5 - 1, size=(32, 32), mode="bilinear", antialias=True)
    with torch.no_grad():
        expected = to_uint8(sampler(family.nets["G"])(x, direction[0].upper() + direction[2].upper())).numpy()[0]
    assert np.array_equal(pixels(out / "photo.png"), expected)


def test_stargan_attrs_translate_to_the_asked_for_attributes(faces, user_images, tmp_path):  # noqa: F811
    run_dir = tmp_path / "star"
    train("stargan_celeba", *TINY_STAR, *STEPS, f"data.root={faces}", "data.attrs=[]", "data.num_workers=0",
          f"run.dir={run_dir}")  # data.attrs=[]: the default five, Black_Hair Blond_Hair Brown_Hair Male Young
    blond = sample(run_dir, "--input", user_images, "--attrs", "Blond_Hair=1,Male=0", "--out", tmp_path / "blond")
    assert blond[0] == 0
    assert sorted(p.name for p in (tmp_path / "blond").iterdir()) == ["photo.png", "rgba.png", "small_grey.png"]
    assert pixels(tmp_path / "blond" / "photo.png").shape == (32, 32, 3)
    assert sample(run_dir, "--input", user_images, "--attrs", "Black_Hair=1", "--out", tmp_path / "black")[0] == 0
    assert not np.array_equal(pixels(tmp_path / "blond" / "photo.png"), pixels(tmp_path / "black" / "photo.png"))
    # the targets: asked-for attributes set, a hair colour switching the others off, the rest kept
    _, family, _ = load_run(run_dir, device="cpu")
    own = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    targets = family.targets(own, Condition(attrs=(("Blond_Hair", "1"), ("Male", "0"))))
    assert targets.tolist() == [[0.0, 1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0, 0.0]]
    code, err = sample(run_dir, "--input", user_images, "--attrs", "Bald=1", "--out", tmp_path / "x")
    assert code == 2 and "'Bald' is not an attribute" in error_line(err) and "Blond_Hair" in err


def test_class_stargan_translates_to_the_given_class():
    cfg = recipes.from_dict({"family": "stargan", "model": {"condition": "class", "width": 4, "n_blocks": 1}})
    fam = FAMILIES["stargan"](cfg, DataInfo(32, 1, tuple("0123456789"), (), {}, {}))
    own = torch.eye(10)[[2, 5]]
    assert fam.targets(own, Condition(cls="7")).argmax(1).tolist() == [7, 7]
    with torch.no_grad():
        out = fam.translate(fam.nets["G"], torch.rand(2, 1, 32, 32) * 2 - 1, Condition(cls="7"))
    assert out.shape == (2, 1, 32, 32)
    refused = [(Condition(), "needs a target: --class"),
               (Condition(attrs=(("Male", "1"),)), "conditioned on classes; pick the target"),
               (Condition(cls="7", direction="a2b"), "--direction: a stargan run translates to labels")]
    for condition, message in refused:
        with pytest.raises(ConfigError, match=message):
            fam.targets(own, condition)


# ----------------------------------------------------------------------------- clear errors


def test_a_classifier_run_has_no_generator(digits, tmp_path):
    run_dir = tmp_path / "cls"
    train("classifier_digits", *TINY_CLS, *STEPS, "eval.every=0", f"data.root={digits}", f"run.dir={run_dir}")
    code, err = sample(run_dir, "--out", tmp_path / "out")
    assert code == 2 and "'classifier' run: it has no generator" in error_line(err)
    assert not (tmp_path / "out").exists()


def test_flags_a_run_cannot_use_are_one_line(acgan, cyclegan, digits, user_images, tmp_path):
    dcgan, twins, broken = tmp_path / "dcgan", tmp_path / "twins", tmp_path / "broken.png"
    twins.mkdir()
    for name in ("a.png", "a.jpg"):
        Image.new("L", (8, 8)).save(twins / name)
    broken.write_bytes(b"\x89PNG not really")
    train("dcgan_digits_smoke", *TINY_GAN, *STEPS, f"data.root={digits}", f"run.dir={dcgan}")
    cases = [((dcgan, "--class", "3"), "--class: this dcgan run is not class-conditioned"),
             ((acgan, "--class", "seven"), "--class 'seven': not a class of this run"),
             ((acgan, "--attrs", "Smiling=1"), "--attrs: this acgan run is not conditioned on attributes"),
             ((acgan, "--attrs", "Smiling"), "--attrs: 'Smiling' is not Name=value"),
             ((acgan, "--input", user_images), "--input: this acgan run generates from noise"),
             ((cyclegan,), "this cyclegan run translates images: give them with --input"),
             ((cyclegan, "--input", user_images, "--class", "3"), "choose the way with --direction"),
             ((acgan, "--direction", "a2b"), "--direction: only for translating images"),
             ((cyclegan, "--input", twins), "two input images would both be written to"),
             ((cyclegan, "--input", broken), f"--input '{broken}': not an image"),
             ((acgan, "--num", 0), "--num and --batch-size must be at least 1")]
    for argv, message in cases:
        code, err = sample(*argv, "--out", tmp_path / "out")
        assert code == 2 and message in error_line(err), (argv, err)
    assert not (tmp_path / "out").exists()
    code, err = sample(cyclegan, "--input", user_images, "--out", user_images)  # rgba.png would be replaced
    assert code == 2 and "--out would overwrite the input image" in error_line(err)
    assert sorted(p.name for p in user_images.iterdir()) == ["notes.txt", "photo.jpg", "rgba.png", "small_grey.png"]
