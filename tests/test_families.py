"""Each family: its nets have the reports' shapes, its loss returns finite named terms, its smoke recipe trains."""
from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import TINY_GAN, metrics, train
from distgen import config
from distgen.data import DataInfo
from distgen.families import FAMILIES

DIGITS = DataInfo(32, 1, tuple("0123456789"), (), {}, {})
FACES = DataInfo(64, 3, (), (), {}, {})


def test_dcgan_nets_are_the_reports_at_64px():
    fam = FAMILIES["dcgan"](config.from_dict({"family": "dcgan"}), FACES)
    convs_g = [m for m in fam.nets["G"].modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs_g] == [(100, 512), (512, 256), (256, 128), (128, 64), (64, 3)]
    convs_d = [m for m in fam.nets["D"].modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs_d] == [(3, 64), (64, 128), (128, 256), (256, 512), (512, 1)]
    z = torch.randn(2, 100, 1, 1)
    assert fam.nets["G"](z).shape == (2, 3, 64, 64)
    assert fam.nets["D"](fam.nets["G"](z))["adv"].shape == (2, 1)


@pytest.mark.parametrize("family", ["dcgan", "acgan", "wgan_gp"])
def test_losses_are_finite_named_terms(family):
    torch.manual_seed(0)
    cfg = config.from_dict({"family": family, "model": {"z_dim": 8, "width": 8}, "train": {"batch_size": 4}})
    fam = FAMILIES[family](cfg, DIGITS)
    batch = {"image": torch.rand(4, 1, 32, 32) * 2 - 1, "label": torch.tensor([0, 1, 2, 3])}
    for phase in fam.PHASES:
        terms = fam.loss(phase, fam.nets, batch if fam.PHASES[phase].uses_data else None)
        assert terms and all(name.startswith(f"{phase}/") for name in terms)
        assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
        assert all(t.requires_grad for t in terms.values())


def test_wgan_gp_penalty_is_zero_for_a_unit_gradient_critic():
    cfg = config.from_dict({"family": "wgan_gp", "model": {"z_dim": 8, "width": 8}})
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


@pytest.mark.parametrize("recipe", ["dcgan_digits_smoke", "wgan_gp_digits_smoke"])
def test_smoke_recipes_train_with_finite_losses(digits, tmp_path, recipe):
    run_dir = tmp_path / recipe
    train(recipe, *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=10")
    rows = metrics(run_dir)
    assert rows[-1]["step"] == 10
    for row in rows:
        assert all(math.isfinite(v) for k, v in row.items())
    assert (run_dir / "samples" / "step_10.png").is_file()


def test_wgan_gp_two_processes_stay_in_sync(digits, tmp_path):
    """Gradient penalty (double backward) through DDP, with n_critic = 5, on two real processes."""
    run_dir = tmp_path / "wgan2"
    train("wgan_gp_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=4",
          launcher="accelerate2")
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["in_sync"]
