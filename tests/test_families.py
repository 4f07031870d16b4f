"""Each family: its nets have the reports' shapes, its loss returns finite named terms, its smoke recipe trains."""
from __future__ import annotations

import json
import math

import pytest
import torch

from accelerate.utils import set_seed
from safetensors.torch import load_file

from conftest import ROOT, TINY_GAN, metrics, train
from distgen import config, recipes
from distgen.data import DataInfo, load_info
from distgen.families import FAMILIES

DIGITS = DataInfo(32, 1, tuple("0123456789"), (), {}, {})
FACES = DataInfo(64, 3, (), (), {}, {})


def test_dcgan_nets_are_the_reports_at_64px():
    fam = FAMILIES["dcgan"](recipes.from_dict({"family": "dcgan"}), FACES)
    convs_g = [m for m in fam.nets["G"].modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs_g] == [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
    convs_d = [m for m in fam.nets["D"].modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs_d] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    z = torch.randn(2, 100, 1, 1)
    assert fam.nets["G"](z).shape == (2, 3, 64, 64)
    assert fam.nets["D"](fam.nets["G"](z))["adv"].shape == (2, 1)


GAN_FAMILIES = ["dcgan", "lsgan", "wgan_gp", "sagan", "acgan", "cgan"]
EXPECTED_TERMS = {
    "dcgan": {"D": {"D/real", "D/fake"}, "G": {"G/adv"}},
    "lsgan": {"D": {"D/real", "D/fake"}, "G": {"G/adv"}},
    "wgan_gp": {"D": {"D/real", "D/fake", "D/gp"}, "G": {"G/adv"}},
    "sagan": {"D": {"D/real", "D/fake"}, "G": {"G/adv"}},
    "acgan": {"D": {"D/real", "D/fake", "D/cls_real"}, "G": {"G/adv", "G/cls"}},
    "cgan": {"D": {"D/real", "D/fake"}, "G": {"G/adv"}},
}


@pytest.mark.parametrize("family", GAN_FAMILIES)
def test_losses_are_finite_named_terms(family):
    torch.manual_seed(0)
    cfg = recipes.from_dict({"family": family, "model": {"z_dim": 8, "width": 8}, "train": {"batch_size": 4}})
    fam = FAMILIES[family](cfg, DIGITS)
    batch = {"image": torch.rand(4, 1, 32, 32) * 2 - 1, "label": torch.tensor([0, 1, 2, 3])}
    for phase in fam.PHASES:
        terms = fam.loss(phase, fam.nets, batch if fam.PHASES[phase].uses_data else None)
        assert set(terms) == EXPECTED_TERMS[family][phase]
        assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
        assert all(t.requires_grad for t in terms.values())
    inputs, cols = fam.grid_inputs(0)
    images = fam.generate(fam.nets["G"], inputs)
    assert images.shape[1:] == (1, 32, 32) and len(images) % cols == 0


def test_lsgan_is_least_squares_and_dcgan_is_cross_entropy():
    cfg = lambda f: recipes.from_dict({"family": f, "model": {"z_dim": 8, "width": 8}})  # noqa: E731
    logit = torch.tensor([[0.0], [2.0]])
    ls = FAMILIES["lsgan"](cfg("lsgan"), DIGITS).d_terms(logit, logit)
    assert ls["D/real"].item() == pytest.approx(0.5 * ((0 - 1) ** 2 + (2 - 1) ** 2) / 2)
    assert ls["D/fake"].item() == pytest.approx(0.5 * (0 + 4) / 2)
    dc = FAMILIES["dcgan"](cfg("dcgan"), DIGITS).d_terms(logit, logit)
    assert dc["D/real"].item() == pytest.approx(torch.nn.functional.softplus(-logit).mean().item())


def test_sagan_has_spectral_norm_and_attention_in_both_nets():
    cfg = recipes.from_dict({"family": "sagan", "model": {"z_dim": 8, "width": 8}})
    fam = FAMILIES["sagan"](cfg, FACES)
    for net in fam.nets.values():
        assert any(torch.nn.utils.parametrize.is_parametrized(m) for m in net.modules())
        assert any(type(m).__name__ == "SelfAttention" for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fam.nets["D"].modules())


def test_acgan_conditions_on_binary_attributes():
    faces = DataInfo(32, 3, (), ("Smiling", "Male"), {}, {})
    cfg = recipes.from_dict({"family": "acgan", "model": {"z_dim": 8, "width": 8, "condition": "attrs"},
                             "train": {"batch_size": 4}})
    fam = FAMILIES["acgan"](cfg, faces)
    batch = {"image": torch.rand(4, 3, 32, 32) * 2 - 1, "attrs": torch.tensor([[1., 0.], [0., 1.], [1., 1.], [0., 0.]])}
    assert set(fam.loss("D", fam.nets, batch)) == {"D/real", "D/fake", "D/cls_real"}
    inputs, cols = fam.grid_inputs(0)
    assert cols == 4 and inputs["c"][:4].tolist() == [[0, 0], [1, 0], [0, 0], [0, 1]]  # (off, on) per attribute
    assert torch.equal(inputs["z"][0], inputs["z"][1])  # the pair shares its noise


def test_cgan_conditions_on_the_hair_eye_pair():
    anime = DataInfo(32, 3, tuple(f"{h} hair {e} eyes" for h in "ab" for e in "xyz"), (), {}, {},
                     {"hair": ["a", "b"], "eye": ["x", "y", "z"]})
    for mode in ("projection", "concat"):
        cfg = recipes.from_dict({"family": "cgan", "model": {"z_dim": 8, "width": 8, "cond": mode},
                                 "train": {"batch_size": 4}})
        fam = FAMILIES["cgan"](cfg, anime)
        assert fam.factors == [2, 3]
        cond = fam.condition(torch.tensor([0, 5, 4]))  # (a,x), (b,z), (b,y)
        assert cond.tolist() == [[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [0, 1, 0, 1, 0]]
        batch = {"image": torch.rand(4, 3, 32, 32) * 2 - 1, "label": torch.tensor([0, 1, 2, 5])}
        assert all(torch.isfinite(t) for t in fam.loss("D", fam.nets, batch).values())


def test_soft_labels_and_flips_shape_d_targets():
    cfg = recipes.from_dict({"family": "dcgan", "model": {"z_dim": 8, "width": 8, "real_label": 0.9,
                                                          "flip_prob": 0.25}})
    fam = FAMILIES["dcgan"](cfg, DIGITS)
    torch.manual_seed(0)
    t = fam.targets(torch.zeros(20000, 1), real=True)
    assert sorted(t.unique().tolist()) == [0.0, pytest.approx(0.9)]
    assert (t == 0).float().mean().item() == pytest.approx(0.25, abs=0.02)


def test_diffaugment_keeps_shape_and_gradient():
    from distgen.families import diffaug

    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    out = x
    for fn in diffaug.parse("translation,color,cutout"):
        out = fn(out)
    assert out.shape == x.shape and not torch.equal(out, x)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(config.ConfigError, match="translation"):
        diffaug.parse("rotate")


def test_wgan_gp_penalty_is_zero_for_a_unit_gradient_critic():
    cfg = recipes.from_dict({"family": "wgan_gp", "model": {"z_dim": 8, "width": 8}})
    fam = FAMILIES["wgan_gp"](cfg, DIGITS)
    w = torch.randn(1, 1, 32, 32)
    w = w / w.norm()
    critic = lambda x: {"adv": (x * w).flatten(1).sum(1, keepdim=True)}  # noqa: E731  gradient = w, norm 1
    real, fake = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)
    assert fam.gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    steep = lambda x: {"adv": 3 * critic(x)["adv"]}  # noqa: E731  norm 3 -> penalty (3-1)^2
    assert fam.gradient_penalty(steep, real, fake).item() == pytest.approx(4.0, rel=1e-5)


def test_wgan_gp_default_phases_repeat_the_critic():
    assert dict(FAMILIES["wgan_gp"].DEFAULT_PHASES) == {"D": 5, "G": 1}


SMOKE = {"dcgan": "dcgan_digits_smoke", "lsgan": "lsgan_digits_smoke", "wgan_gp": "wgan_gp_digits_smoke",
         "sagan": "sagan_digits_smoke", "acgan": "quickstart", "cgan": "cgan_digits_smoke"}


@pytest.mark.parametrize("family", GAN_FAMILIES)
def test_smoke_recipes_train_on_two_processes_with_finite_named_losses_and_identical_parameters(
        digits, tmp_path, family):
    """Every family's smoke recipe on two real processes (DDP over gloo): GP double backward, spectral
    norm, attention, projection, with DiffAugment and two D steps per G step. Every logged row holds the
    family's named terms, finite; every net moved from its initial weights; both ranks end identical.
    (One launch per family does both jobs: each launch costs ~5 s of imports on 2 cores.)"""
    run_dir = tmp_path / f"{family}2"
    train(SMOKE[family], *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=4", "log.every=2",
          "log.sample_every=4", "run.checkpoint_every=4", "model.diffaugment=translation,cutout",
          "train.phases=[{name: D, repeat: 2}, {name: G}]", launcher="accelerate2")
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [2, 4]
    for row in rows:
        assert set().union(*EXPECTED_TERMS[family].values()) <= set(row)
        assert all(math.isfinite(v) for v in row.values())
    assert (run_dir / "samples" / "step_4.png").is_file()
    cfg = recipes.load(ROOT / "recipes" / f"{SMOKE[family]}.yaml", [*TINY_GAN, f"data.root={digits}"])
    set_seed(cfg.run.seed)  # as the loop seeds before building the nets: the weights the run started from
    initial = FAMILIES[family](cfg, load_info(cfg.data))
    ckpt = run_dir / "checkpoints" / "step_4"
    meta = json.loads((ckpt / "meta.json").read_text())
    for net, file in meta["family_nets"].items():
        trained = load_file(str(ckpt / file))
        # parameters only: BatchNorm statistics and spectral norm's vectors change in a forward alone
        before = dict(initial.nets[net].named_parameters())
        assert before and set(before) <= set(trained), net
        assert any(not torch.equal(before[k].detach(), trained[k]) for k in before), f"{net} never stepped"
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["in_sync"], ranks["relative_drift"]
