"""`python -m shards folder` on users' own image folders (built here with PIL), and what a run on them reports.

The end-to-end test converts a class-per-subfolder set of mixed modes and sizes with a corrupt file, trains a
classifier and an ACGAN on it, judges the ACGAN's samples with the classifier and finds the folder names in the
run's report.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_CLS, TINY_GAN, script, train
from test_converters import convert, corrupt, counts, index_of, samples, save_image

# class folder -> (PIL mode, size): grey, RGB, RGBA and palette images of four sizes, none 32x32 but dog's
CLASSES = {"cat": ("RGB", (40, 30)), "dog": ("L", (32, 32)), "eel": ("RGBA", (50, 50)), "fox": ("P", (20, 24))}


def image(path: Path, mode: str, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).convert(mode).save(path)


def class_folders(src: Path, per_class: int = 10) -> Path:
    for c, (name, (mode, size)) in enumerate(CLASSES.items()):
        for i in range(per_class):
            image(src / name / f"{i:03d}.png", mode, size, seed=100 * c + i)
    corrupt(src / "dog" / "broken.png")
    return src


@pytest.fixture(scope="module")
def own_set(tmp_path_factory) -> Path:
    src = class_folders(tmp_path_factory.mktemp("own") / "pets")
    out = src.parent / "shards"
    assert convert("folder", src, out, "--size", "32") == 0
    return out


def test_class_folders_give_sorted_class_names_labels_and_a_seeded_split(own_set, tmp_path, capsys):
    index = index_of(own_set)
    assert index["class_names"] == ["cat", "dog", "eel", "fox"] and index["channels"] == 3
    assert index["skipped"]["files"] == ["dog/broken.png"]
    assert counts(own_set) == {"train": 36, "test": 4}  # 10% of each class of 10 (dog's 11th is corrupt)
    got = samples(own_set, "train") + samples(own_set, "test")
    assert len({s["key"] for s in got}) == 40  # cat/001.png and dog/001.png do not share a key
    for s in got:  # every label is its folder's, every image 32x32 RGB whatever it was
        assert index["class_names"][s["cls"]] == s["json"]["file"].split("/")[0]
        assert s["image"].size == (32, 32) and s["image"].mode == "RGB"
    assert sorted(s["json"]["file"].split("/")[0] for s in samples(own_set, "test")) == list(CLASSES)
    # the same seed gives the same split; another seed another one
    again, other = tmp_path / "again", tmp_path / "other"
    assert convert("folder", own_set.parent / "pets", again, "--size", "32") == 0
    assert convert("folder", own_set.parent / "pets", other, "--size", "32", "--seed", "1") == 0
    files = {out: [s["json"]["file"] for s in samples(out, "test")] for out in (own_set, again, other)}
    assert files[again] == files[own_set] != files[other]
    printed = capsys.readouterr().out  # the resize is said, with the sizes it came from
    assert "resized 27 of 36 images from 20x24 to 50x50 px to 32x32 px (--size 32)" in printed
    assert "4 classes: cat, dog, eel, fox" in printed and "skipped 1: dog/broken.png" in printed


def test_a_flat_grey_folder_is_unlabelled_and_stays_grey(tmp_path):
    src, out = tmp_path / "flat", tmp_path / "out"
    for i in range(5):
        image(src / f"img{i}.jpg", "L", (16, 16), seed=i)
    image(src / "img5.png", "LA", (16, 16), seed=5)
    assert convert("folder", src, out, "--size", "16", "--test-fraction", "0.4") == 0
    index = index_of(out)
    assert index["class_names"] == [] and index["channels"] == 1 and counts(out) == {"train": 4, "test": 2}
    assert all(s["cls"] is None and s["image"].mode == "L" for s in samples(out, "train"))


def test_train_and_test_folders_are_kept_as_splits(tmp_path, capsys):
    src, out = tmp_path / "given", tmp_path / "out"
    for split, n in (("train", 3), ("test", 2)):
        for name in ("a", "b"):
            for i in range(n):
                image(src / split / name / f"{i}.png", "RGB", (8, 8), seed=i)
    assert convert("folder", src, out, "--size", "8") == 0
    assert counts(out) == {"train": 6, "test": 4} and index_of(out)["class_names"] == ["a", "b"]
    assert "resized" not in capsys.readouterr().out  # nothing resized, nothing said
    (src / "test" / "c").mkdir()
    image(src / "test" / "c" / "0.png", "RGB", (8, 8), seed=0)
    assert convert("folder", src, tmp_path / "out2") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: folder: ") and "['a', 'b', 'c']" in err and not (tmp_path / "out2").exists()


def test_images_beside_class_folders_are_rejected_by_name(tmp_path, capsys):
    src = class_folders(tmp_path / "mixed", per_class=1)
    save_image(src / "stray.png", (8, 8))
    assert convert("folder", src, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "stray.png" in err and "class folder" in err and not (tmp_path / "out").exists()


def test_faces_says_when_it_resizes(tmp_path, capsys):
    """The faces converter turned 48 px images into 64 px ones without a word."""
    src = tmp_path / "faces"
    for split in ("train", "test"):
        save_image(src / split / "00000.png", (48, 48))
    assert convert("faces", src, tmp_path / "out") == 0
    assert "faces train: resized 1 of 1 images from 48x48 px to 64x64 px (--size 64)" in capsys.readouterr().out


def test_own_folder_trains_a_classifier_and_an_acgan_whose_report_names_the_classes(own_set, tmp_path):
    judge, gan = tmp_path / "judge", tmp_path / "acgan"
    train("classifier_digits", *TINY_CLS, f"data.root={own_set}", f"run.dir={judge}", "train.steps=10",
          "eval.every=10", "run.checkpoint_every=10", "train.batch_size=16")
    assert 0.0 <= json.loads((judge / "eval" / "step_10.json").read_text())["acc"] <= 1.0
    train("quickstart", *TINY_GAN, f"data.root={own_set}", f"run.dir={gan}", "train.steps=10",
          "run.checkpoint_every=10", f"eval.classifier={judge}")
    evaluated = script("evaluate", str(gan), "--metrics", "acc", "--num-samples", "8")
    assert evaluated.returncode == 0, evaluated.stderr
    assert set(json.loads((gan / "eval" / "step_10.json").read_text())) >= {f"acc_class_{c}" for c in CLASSES}
    reported = script("report", str(gan))
    assert reported.returncode == 0, reported.stderr
    md = (gan / "report" / "index.md").read_text()
    assert "Accuracy per class" in md and all(f"acc_class_{c}" in md for c in CLASSES)
