"""Image-to-image families: CycleGAN and StarGAN nets, named terms, the image pool, smoke runs on one and
two processes, exact resume, the translation measurements, and the classifier's attribute mode."""
from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from checkpoint_state import assert_resumed_from, assert_same_checkpoint
from conftest import launch_module, metrics, train
from distgen import config, recipes
from distgen.data import DataInfo
from distgen.families import FAMILIES
from distgen.families.classifier import Classifier
from distgen.families.cyclegan import ImagePool, ResidualBlock, patch_discriminator, receptive_field
from distgen.families.stargan import attribute_accuracy

GREY, RGB = DataInfo(32, 1, tuple("0123456789"), (), {}, {}), DataInfo(32, 3, tuple("0123456789"), (), {}, {})
CELEBA_ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Male", "Smiling", "Young")
LOG = ["log.every=5", "log.sample_every=10"]
TINY_CYCLE = ["model.width=4", "model.n_blocks=1", "model.d_layers=2", "model.grid_rows=2", "train.batch_size=4", *LOG]
TINY_STAR = ["model.width=4", "model.n_blocks=1", "model.grid_rows=2", "train.batch_size=4", *LOG,
             "train.phases=[{name: D, repeat: 2}, {name: G}]"]
TINY_JUDGE = ["model.width=4", "train.batch_size=32", "log.every=5", "train.steps=10", "eval.every=10",
              "run.checkpoint_every=10"]
CYCLE_TERMS = {"D": {"D/A_real", "D/A_fake", "D/B_real", "D/B_fake"},
               "G": {"G/adv_A", "G/adv_B", "G/cycle_A", "G/cycle_B", "G/idt_A", "G/idt_B"}}
STAR_TERMS = {"D": {"D/real", "D/fake", "D/cls", "D/gp"}, "G": {"G/adv", "G/cls", "G/rec"}}
# One thread per process: these tiny nets gain nothing from a second one, and on a shared 2-core
# machine OpenMP threads competing for cores made the same runs many times slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """In this process too (restored after this file)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cyclegan(**model):
    cfg = recipes.from_dict({"family": "cyclegan", "model": {"width": 4, "n_blocks": 2, "d_layers": 2, **model}})
    return FAMILIES["cyclegan"](cfg, {"A": GREY, "B": RGB})


def stargan(info, **model):
    cfg = recipes.from_dict({"family": "stargan", "model": {"width": 4, "n_blocks": 1, **model}})
    return FAMILIES["stargan"](cfg, info)


def grid_size(path) -> tuple[int, int]:
    return Image.open(path).size


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """A tiny CelebA release in its real layout (hair colour = the image's colour), converted at 32 px."""
    src, out = tmp_path_factory.mktemp("raw") / "celeba", tmp_path_factory.mktemp("shards") / "celeba"
    (src / "img_align_celeba").mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    colours = {0: (20, 20, 20), 1: (230, 210, 90), 2: (120, 70, 30)}
    rows, parts = [], []
    for i in range(24):
        hair = i % 3
        values = [1 if hair == h else -1 for h in range(3)] + [-1] + [int(v) * 2 - 1 for v in
                                                                      torch.randint(0, 2, (3,), generator=gen)]
        name = f"{i + 1:06d}.jpg"
        Image.new("RGB", (178, 218), colours[hair]).save(src / "img_align_celeba" / name)
        rows.append(f"{name} " + " ".join(f"{v:2d}" for v in values))
        parts.append(f"{name} {0 if i < 16 else 2}")
    (src / "list_attr_celeba.txt").write_text(f"{len(rows)}\n{' '.join(CELEBA_ATTRS)}\n" + "\n".join(rows) + "\n")
    (src / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")
    from shards.__main__ import main

    assert main(["celeba", "--src", str(src), "--out", str(out), "--size", "32"]) == 0
    return out


@pytest.fixture(scope="module")
def judges(digits, digits_m, tmp_path_factory):
    """Tiny class judges of grey digits (A) and of digits-m (B)."""
    runs = tmp_path_factory.mktemp("judges")
    for name, root in (("A", digits), ("B", digits_m)):
        train("classifier_digits", *TINY_JUDGE, f"data.root={root}", f"run.dir={runs / name}", env=ONE_THREAD)
    return {"A": runs / "A", "B": runs / "B"}


def translate_acc(capsys, *argv) -> dict:
    """launch/translate_acc.py in this process; its printed JSON line."""
    module = launch_module("launch/translate_acc.py")
    capsys.readouterr()
    assert module.main([str(a) for a in argv]) == 0
    assert torch.is_grad_enabled()  # nothing global left changed for the tests that follow
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- CycleGAN nets and terms


def test_resnet_generator_is_the_reference_at_256px():
    fam = FAMILIES["cyclegan"](recipes.from_dict({"family": "cyclegan"}), {"A": RGB, "B": RGB})
    G = fam.nets["G"].nets["AB"]
    convs = [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]) for m in G.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs[:3] == [(3, 64, 7, 1), (64, 128, 3, 2), (128, 256, 3, 2)]
    assert convs[3:-3] == [(256, 256, 3, 1)] * 18  # 9 residual blocks of two convs
    assert convs[-3:] == [(256, 128, 3, 2), (128, 64, 3, 2), (64, 3, 7, 1)]
    assert sum(isinstance(m, ResidualBlock) for m in G.modules()) == 9
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in G.modules()) == 2 + 2 * 9
    assert any(isinstance(m, nn.InstanceNorm2d) for m in G.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for net in fam.nets.values() for m in net.modules())


def test_patchgan_is_70x70_with_a_30x30_map_at_256px():
    D = patch_discriminator(3, width=4, n_layers=3)
    assert receptive_field(D) == 70
    assert D(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert patch_discriminator(3, width=4, n_layers=2)(torch.randn(2, 3, 32, 32)).shape == (2, 1, 6, 6)


def test_generators_map_between_channel_counts():
    fam = cyclegan()
    a, b = torch.randn(2, 1, 32, 32), torch.randn(2, 3, 32, 32)
    assert fam.nets["G"](a, "AB").shape == (2, 3, 32, 32) and fam.nets["G"](b, "BA").shape == (2, 1, 32, 32)
    assert fam.nets["D"](a, "A").shape == fam.nets["D"](b, "B").shape == (2, 1, 6, 6)
    grid = fam.generate(fam.nets["G"], {"A": a, "B": b})
    assert grid.shape == (16, 3, 32, 32)  # per pair: real_A fake_B rec_A idt_A / real_B fake_A rec_B idt_B
    assert torch.equal(grid[0], a[0].expand(3, -1, -1)) and torch.equal(grid[4], b[0])


@pytest.mark.parametrize("gan_mode", ["lsgan", "bce"])
def test_cyclegan_terms_are_named_finite_and_trainable(gan_mode):
    torch.manual_seed(0)
    fam = cyclegan(gan_mode=gan_mode)
    batch = {"A": {"image": torch.rand(3, 1, 32, 32) * 2 - 1}, "B": {"image": torch.rand(3, 3, 32, 32) * 2 - 1}}
    for phase in ("D", "G"):
        terms = fam.loss(phase, fam.nets, batch)
        assert set(terms) == CYCLE_TERMS[phase]
        assert all(t.ndim == 0 and torch.isfinite(t) and t.requires_grad for t in terms.values())
    assert set(cyclegan(lambda_identity=0.0).loss("G", fam.nets, batch)) == CYCLE_TERMS["G"] - {"G/idt_A", "G/idt_B"}


def test_lsgan_is_least_squares_and_bce_is_cross_entropy():
    out = torch.tensor([0.0, 2.0])
    assert cyclegan(gan_mode="lsgan").gan_loss(out, True).item() == pytest.approx((1 + 1) / 2)
    assert cyclegan(gan_mode="lsgan").gan_loss(out, False).item() == pytest.approx((0 + 4) / 2)
    assert cyclegan(gan_mode="bce").gan_loss(out, True).item() == pytest.approx(
        nn.functional.softplus(-out).mean().item())


def test_cycle_and_identity_weights():
    """cycle = lambda * L1 of the round trip; identity = 0.5 * lambda * L1: with identity generators both vanish."""
    fam = cyclegan(lambda_cycle=10.0, lambda_identity=0.5)
    ident = lambda x, key: x.mean(1, keepdim=True) if key == "BA" else x.expand(-1, 3, -1, -1)  # noqa: E731
    shift = lambda x, key: ident(x, key) + 0.1  # noqa: E731
    batch = {"A": {"image": torch.rand(2, 1, 32, 32) * 0.5},
             "B": {"image": torch.rand(2, 1, 32, 32).expand(-1, 3, -1, -1)}}
    terms = fam.loss("G", {"G": ident, "D": fam.nets["D"]}, batch)
    assert terms["G/cycle_A"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["G/idt_A"].item() == pytest.approx(0.0, abs=1e-6)
    terms = fam.loss("G", {"G": shift, "D": fam.nets["D"]}, batch)
    assert terms["G/cycle_A"].item() == pytest.approx(10 * 0.2, rel=1e-4)  # two shifted passes
    assert terms["G/idt_A"].item() == pytest.approx(5 * 0.1, rel=1e-4)


# ----------------------------------------------------------------------------- pool


def test_pool_fills_then_swaps_half_with_history():
    torch.manual_seed(0)
    pool = ImagePool(4)
    levels = (torch.arange(256.0) / 127.5 - 1).tolist()  # distinct values the uint8 pool stores exactly
    first = torch.tensor(levels[:4]).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and len(pool.images) == 4  # filling: returned as given
    returned_old = 0
    seen = set(levels[:4])
    for i in range(200):
        new = torch.full((1, 1, 1, 1), levels[4 + i])
        out = pool.query(new).item()
        assert out == levels[4 + i] or out in seen  # the new image, or one stored earlier
        returned_old += out != levels[4 + i]
        seen.add(levels[4 + i])
        assert len(pool.images) == 4
    assert 70 <= returned_old <= 130  # about half swapped
    assert torch.equal(ImagePool(0).query(first), first)


def test_pool_state_round_trips_and_replays_the_same_draws():
    torch.manual_seed(1)
    pool = ImagePool(3)
    pool.query(torch.randn(5, 2, 4, 4))
    copy = ImagePool(3)
    copy.load_state_dict(pool.state_dict())
    new, rng = torch.randn(6, 2, 4, 4), torch.get_rng_state()
    a = pool.query(new)
    torch.set_rng_state(rng)
    assert torch.equal(copy.query(new), a)
    fam = cyclegan(pool_size=2)
    fam.pools["A"].query(torch.ones(3, 1, 2, 2))
    other = cyclegan(pool_size=2)
    other.load_state_dict(fam.state_dict())
    assert torch.equal(torch.stack(other.pools["A"].images), torch.full((2, 1, 2, 2), 255, dtype=torch.uint8))
    assert other.pools["B"].images == []


# ----------------------------------------------------------------------------- StarGAN


def test_stargan_nets_and_default_attributes():
    celeba = DataInfo(64, 3, (), tuple(f"a{i}" for i in range(10)) + CELEBA_ATTRS, {}, {})
    fam = stargan(celeba)
    assert fam.label_names == ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")  # the default five
    assert fam.columns == [10, 11, 12, 14, 16] and fam.group == [0, 1, 2]
    x, c = torch.randn(2, 3, 64, 64), torch.tensor([[1.0, 0, 0, 1, 0], [0, 0, 1, 0, 1]])
    assert fam.nets["G"](x, c).shape == x.shape
    out = fam.nets["D"](x)
    assert out["adv"].shape == (2, 1, 2, 2) and out["cls"].shape == (2, 5)  # 5 stride-2 convs at 64 px
    assert sum(isinstance(m, nn.Conv2d) for m in fam.nets["D"].main) == 5
    hair_blond, male, young = fam.translations(c)[1], fam.translations(c)[3], fam.translations(c)[4]
    assert hair_blond.tolist() == [[0, 1, 0, 1, 0], [0, 1, 0, 0, 1]]  # hair colours: one on, the rest off
    assert male.tolist() == [[1, 0, 0, 0, 0], [0, 0, 1, 1, 1]] and young[:, 4].tolist() == [1, 0]  # flipped
    batch = {"attrs": torch.zeros(2, 17)}
    batch["attrs"][0, 11] = 1
    assert fam.labels(batch).tolist() == [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0]]


@pytest.mark.parametrize("condition", ["class", "attrs"])
def test_stargan_terms_are_named_finite_and_trainable(condition):
    torch.manual_seed(0)
    info = GREY if condition == "class" else DataInfo(32, 1, (), ("Blond_Hair", "Male"), {}, {})
    fam = stargan(info, condition=condition)
    batch = {"image": torch.rand(4, 1, 32, 32) * 2 - 1, "label": torch.tensor([0, 1, 2, 3]),
             "attrs": torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])}
    for phase in ("D", "G"):
        terms = fam.loss(phase, fam.nets, batch)
        assert set(terms) == STAR_TERMS[phase]
        assert all(t.ndim == 0 and torch.isfinite(t) and t.requires_grad for t in terms.values())
    grid = fam.generate(fam.nets["G"], {"image": batch["image"][:2], "c": fam.labels(batch)[:2]})
    assert grid.shape == (2 * (1 + fam.c_dim), 1, 32, 32) and torch.equal(grid[0], batch["image"][0])
    if condition == "class":
        assert [t.argmax(1).tolist() for t in fam.translations(fam.labels(batch))] == [[j] * 4 for j in range(10)]


class Painter(nn.Module):
    """A "generator" writing label j into channel j (the given labels, or none at all)."""

    def __init__(self, ignore_target: bool = False):
        super().__init__()
        self.ignore_target = ignore_target

    def forward(self, x, c):
        c = torch.zeros_like(c) if self.ignore_target else c
        return c[:, :, None, None].expand(-1, -1, *x.shape[2:])


class Reader(nn.Module):
    """A judge of (Male, Blond_Hair, Black_Hair): logit > 0 iff the painted channel is 1."""

    def forward(self, x):
        return (x.mean((2, 3)) - 0.5)[:, [2, 1, 0]]


def test_attribute_accuracy_counts_the_asked_for_attribute(faces):
    """Translations that carry their targets score 1; translations that ignore them score 0 on
    switching a hair colour on and, on flipping Male, the share of test images that were male."""
    from distgen.data import eval_batches, load_info

    cfg = recipes.from_dict({"family": "stargan", "model": {"width": 4, "n_blocks": 1},
                             "data": {"root": str(faces), "attrs": ["Black_Hair", "Blond_Hair", "Male"]}})
    info = load_info(cfg.data)
    fam = FAMILIES["stargan"](cfg, info)
    judge = Classifier(recipes.from_dict({"family": "classifier", "model": {"target": "attrs"}}),
                       DataInfo(32, 3, (), ("Male", "Blond_Hair", "Black_Hair"), {}, {}))
    judge.nets["net"] = Reader()
    fam.nets["G"] = Painter()
    perfect = attribute_accuracy(fam, judge, num_samples=0)
    assert perfect["num_samples"] == 8 and perfect["attr_acc"] == 1.0
    assert {"attr_acc_Black_Hair", "attr_acc_Blond_Hair", "attr_acc_Male", "attr_acc_real"} <= set(perfect)
    fam.nets["G"] = Painter(ignore_target=True)
    lazy = attribute_accuracy(fam, judge, num_samples=0)
    male = torch.cat([b["attrs"][:, 2] for b in eval_batches(info.splits["test"], 64, info, attrs=cfg.data.attrs)])
    assert 0 < male.mean().item() < 1
    assert lazy["attr_acc_Black_Hair"] == lazy["attr_acc_Blond_Hair"] == 0.0
    assert lazy["attr_acc_Male"] == pytest.approx(male.mean().item())
    assert attribute_accuracy(fam, judge, num_samples=3)["num_samples"] == 3


def test_attribute_accuracy_of_digit_classes(digits):
    """Class condition: translating to class j is right when a class judge names j."""
    cfg = recipes.from_dict({"family": "stargan", "model": {"condition": "class", "width": 4, "n_blocks": 1},
                             "data": {"root": str(digits)}})
    fam = FAMILIES["stargan"](cfg, GREY)
    judge = Classifier(recipes.from_dict({"family": "classifier"}), GREY)
    judge.nets["net"] = Reader10()
    fam.nets["G"] = Painter()
    out = attribute_accuracy(fam, judge, num_samples=20)
    assert out["attr_acc"] == 1.0 and out["num_samples"] == 20 and out["attr_acc_7"] == 1.0
    fam.nets["G"] = Painter(ignore_target=True)  # all-zero channels: the judge always says 0
    out = attribute_accuracy(fam, judge, num_samples=20)
    assert out["attr_acc_0"] == 1.0 and out["attr_acc_1"] == 0.0 and out["attr_acc"] == pytest.approx(0.1)


class Reader10(nn.Module):
    def forward(self, x):
        return x.mean((2, 3))


# ----------------------------------------------------------------------------- classifier attrs mode


def test_classifier_attrs_mode_scores_each_attribute():
    cfg = recipes.from_dict({"family": "classifier", "model": {"width": 4, "target": "attrs"}})
    fam = Classifier(cfg, DataInfo(32, 3, (), ("Male", "Young"), {}, {}))
    batch = {"image": torch.rand(4, 3, 32, 32), "attrs": torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])}
    terms = fam.loss(batch, fam.nets)
    assert set(terms) == {"attrs"} and torch.isfinite(terms["attrs"])
    fam.nets["net"] = lambda x: torch.tensor([[1.0, -1], [1, 1], [1, 1], [-1, -1]])
    sums = fam.evaluate(batch, fam.nets)
    assert {k: float(v) for k, v in sums.items()} == {"correct/Male": 3.0, "correct/Young": 4.0, "count": 4.0}
    assert Classifier.finish_eval({k: float(v) for k, v in sums.items()}) == {
        "acc": pytest.approx(7 / 8), "acc_Male": 0.75, "acc_Young": 1.0}
    assert Classifier.finish_eval({"correct": 3.0, "count": 4.0}) == {"acc": 0.75}  # class mode unchanged
    with pytest.raises(config.ConfigError, match="attr"):
        Classifier(cfg, GREY)


# ----------------------------------------------------------------------------- runs


def test_cyclegan_smoke_on_two_processes(digits, digits_m, tmp_path):
    run_dir = tmp_path / "cycle2"
    train("cyclegan_digits_smoke", *TINY_CYCLE, f"data.domain_a={digits}", f"data.domain_b={digits_m}",
          f"run.dir={run_dir}", "train.steps=20", "run.checkpoint_every=20", launcher="accelerate2",
          env=ONE_THREAD)
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    for row in rows:
        assert set().union(*CYCLE_TERMS.values()) <= set(row) and all(math.isfinite(v) for v in row.values())
    assert grid_size(run_dir / "samples" / "step_20.png") == (2 + 4 * 34, 2 + 4 * 34)  # 2 pairs = 4 rows of 4
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["in_sync"], ranks["relative_drift"]


def test_stargan_smoke_on_two_processes(digits, tmp_path):
    run_dir = tmp_path / "star2"
    train("stargan_digits_smoke", *TINY_STAR, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=20",
          "run.checkpoint_every=20", launcher="accelerate2", env=ONE_THREAD)
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    for row in rows:
        assert set().union(*STAR_TERMS.values()) <= set(row) and all(math.isfinite(v) for v in row.values())
    assert grid_size(run_dir / "samples" / "step_20.png") == (2 + 11 * 34, 2 + 2 * 34)  # input + 10 classes
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["in_sync"], ranks["relative_drift"]


def _weights(ckpt):
    meta = json.loads((ckpt / "meta.json").read_text())
    return {f"{net}.{k}": v for net, f in meta["family_nets"].items() for k, v in load_file(str(ckpt / f)).items()}


def test_cyclegan_resume_is_exact_and_translations_are_measured(digits, digits_m, judges, tmp_path, capsys):
    """10 steps + resume + 10 == 20 steps, with small pools that are full and swapping at the split and
    random flips: pools, RNG and stream come back. (No lr decay here: its schedule depends on train.steps, which
    differs between the two halves.) Then translate_acc on the run with the two digit judges."""
    common = [*TINY_CYCLE, f"data.domain_a={digits}", f"data.domain_b={digits_m}", "model.pool_size=6",
              "data.hflip=true", "run.checkpoint_every=10", "run.keep_last=0", "optim.decay_start=1.0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train("cyclegan_digits_smoke", *common, f"run.dir={straight}", "train.steps=20", env=ONE_THREAD)
    train("cyclegan_digits_smoke", *common, f"run.dir={split}", "train.steps=10", env=ONE_THREAD)
    resumed = train("cyclegan_digits_smoke", *common, f"run.dir={split}", "train.steps=20", resume="auto",
                    env=ONE_THREAD)
    assert_resumed_from(split, split / "checkpoints" / "step_10", resumed.stdout + resumed.stderr)
    assert_same_checkpoint(straight / "checkpoints" / "step_20", split / "checkpoints" / "step_20",
                           expect=("G.safetensors", "D.safetensors", "optimizer.bin", "family_rank0.pt"))
    a = _weights(straight / "checkpoints" / "step_20")
    assert any(k.startswith("G.nets.BA") for k in a) and any(k.startswith("D.nets.B") for k in a)
    first = _weights(split / "checkpoints" / "step_10")
    assert any(not torch.equal(first[k], a[k]) for k in a)
    assert [r["step"] for r in metrics(split)] == [5, 10, 15, 20]

    out = translate_acc(capsys, straight, "--judge-a", judges["A"], "--judge-b", judges["B"], "--num-samples", "40")
    assert out["num_A"] == out["num_B"] == 40
    for key in ("acc_AB", "acc_BA", "acc_real_A", "acc_real_B", "acc_A_as_B", "acc_B_as_A"):
        assert 0.0 <= out[key] <= 1.0, key
    assert json.loads((straight / "eval" / "step_20.json").read_text())["acc_AB"] == out["acc_AB"]


def test_cyclegan_two_process_resume_is_exact_with_each_ranks_pools(digits, digits_m, tmp_path):
    """On 2 processes each rank pools its own fakes; the checkpoint holds every rank's pools
    (family_rank<R>.pt), so 10 + resume + 10 == 20 steps there too."""
    common = [*TINY_CYCLE, f"data.domain_a={digits}", f"data.domain_b={digits_m}", "model.pool_size=6",
              "run.checkpoint_every=10", "run.keep_last=0", "optim.decay_start=1.0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train("cyclegan_digits_smoke", *common, f"run.dir={straight}", "train.steps=20", launcher="accelerate2",
          env=ONE_THREAD)
    train("cyclegan_digits_smoke", *common, f"run.dir={split}", "train.steps=10", launcher="accelerate2",
          env=ONE_THREAD)
    pools = [torch.load(split / "checkpoints" / "step_10" / f"family_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert len(pools[0]["pool_A"]["images"]) == 6 and not torch.equal(pools[0]["pool_A"]["images"],
                                                                       pools[1]["pool_A"]["images"])
    resumed = train("cyclegan_digits_smoke", *common, f"run.dir={split}", "train.steps=20", resume="auto",
                    launcher="accelerate2", env=ONE_THREAD)
    assert_resumed_from(split, split / "checkpoints" / "step_10", resumed.stdout + resumed.stderr)
    assert_same_checkpoint(straight / "checkpoints" / "step_20", split / "checkpoints" / "step_20",
                           expect=("G.safetensors", "optimizer.bin", "family_rank0.pt", "family_rank1.pt"))


def test_attribute_judge_and_stargan_on_celeba_layout(faces, tmp_path, capsys):
    judge, star = tmp_path / "judge", tmp_path / "star"
    train("classifier_celeba_attrs", *TINY_JUDGE, f"data.root={faces}", f"run.dir={judge}", "data.num_workers=0",
          env=ONE_THREAD)
    result = json.loads((judge / "eval" / "step_10.json").read_text())
    assert set(result) >= {"acc", *(f"acc_{a}" for a in CELEBA_ATTRS)} and 0.0 <= result["acc"] <= 1.0
    train("stargan_celeba", *TINY_STAR, f"data.root={faces}", "data.attrs=[]", "data.num_workers=0",
          f"run.dir={star}", "train.steps=2", "run.checkpoint_every=2", env=ONE_THREAD)  # data.attrs=[]: default five
    assert grid_size(star / "samples" / "step_2.png") == (2 + 6 * 34, 2 + 2 * 34)
    out = translate_acc(capsys, star, "--judge", judge)
    assert out["num_samples"] == 8 and 0.0 <= out["attr_acc"] <= 1.0
    assert {f"attr_acc_{a}" for a in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")} <= set(out)
