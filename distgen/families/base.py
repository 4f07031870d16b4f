"""What every family file provides, and the small pieces they share.

A family owns its networks (plain PyTorch) and its losses. `loss(phase, nets, batch)` returns
named terms that are already weighted; the loop sums them, calls backward and steps. Losses never
call backward and never see ranks; `nets` are the (possibly DDP-wrapped) modules to run forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from distgen.errors import ConfigError


@dataclass(frozen=True)
class PhaseSpec:
    """One kind of optimisation step: which nets it steps and whether it takes a real batch."""
    nets: tuple[str, ...]
    uses_data: bool = True


class Family:
    STYLE = "single"  # "single" (single-objective loop) or "adversarial" (phase loop)
    ModelConfig: type
    PHASES: dict[str, PhaseSpec] = {}
    DEFAULT_PHASES: tuple[tuple[str, int], ...] = ()  # (phase, repeat) in order

    def __init__(self, cfg, info, device: torch.device | str = "cpu"):
        self.cfg, self.model_cfg, self.info = cfg, cfg.model, info
        self.device = torch.device(device)
        self.image_size = cfg.data.image_size or info.image_size
        self.nets: dict[str, nn.Module] = {}

    def lr(self, net: str) -> float:
        """Learning rate of one net's optimizer (recipes set optim.lr, or optim.lr_g / optim.lr_d)."""
        return self.cfg.optim.lr

    def require_labels(self) -> None:
        if self.info.num_classes < 2:
            raise ConfigError(f"family '{self.cfg.family}' needs class labels, but data.root "
                              f"'{self.cfg.data.root}' has no class_names in index.json")


class GANFamily(Family):
    STYLE = "adversarial"
    PHASES = {"D": PhaseSpec(("D",), uses_data=True), "G": PhaseSpec(("G",), uses_data=False)}
    DEFAULT_PHASES = (("D", 1), ("G", 1))
    GENERATOR = "G"

    def lr(self, net: str) -> float:
        return self.cfg.optim.lr_g if net == self.GENERATOR else self.cfg.optim.lr_d

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.model_cfg.z_dim, 1, 1, generator=generator)
        return z.to(self.device)

    def grid_inputs(self, seed: int) -> tuple[dict, int]:
        """Fixed inputs for sample grids and the number of columns of the grid."""
        raise NotImplementedError

    def generate(self, G: nn.Module, inputs: dict) -> torch.Tensor:
        raise NotImplementedError


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy against a constant target (1 = real, 0 = fake), computed from logits."""
    return nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def build_optimizer(params, optim_cfg, lr: float) -> torch.optim.Optimizer:
    if optim_cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(optim_cfg.beta1, optim_cfg.beta2),
                                weight_decay=optim_cfg.weight_decay)
    if optim_cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=optim_cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=optim_cfg.momentum, weight_decay=optim_cfg.weight_decay)
