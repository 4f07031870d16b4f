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
from distgen.families import diffaug


@dataclass(frozen=True)
class GANModelConfig:
    """Keys every GAN family's `model` section has: sizes and the reports' stabilisation switches."""
    z_dim: int = 100
    width: int = 64  # channels of D's first layer and G's last hidden layer
    g_dropout: float = 0.0  # dropout after G's hidden layers (a report's tip)
    real_label: float = 1.0  # soft labels: e.g. 0.9 for one-sided label smoothing (BCE objectives)
    fake_label: float = 0.0
    flip_prob: float = 0.0  # probability of swapping real/fake targets of a D sample (BCE objectives)
    diffaugment: str = ""  # DiffAugment policies for D inputs, e.g. "translation,color,cutout"


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
    STREAMS: dict[str, str] = {}  # batch key -> DataConfig field of a shard folder; {} = data.root only
    EAGER: tuple[str, ...] = ()  # nets never compiled (double backward, e.g. a gradient-penalty critic)

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

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        self._augment = diffaug.parse(cfg.model.diffaugment)
        self.grad_scale = None  # set by the loop under fp16 loss scaling: a callable giving the scale

    def lr(self, net: str) -> float:
        return self.cfg.optim.lr_g if net == self.GENERATOR else self.cfg.optim.lr_d

    def optimizer(self, net: str, params) -> torch.optim.Optimizer:
        o, which = self.cfg.optim, "g" if net == self.GENERATOR else "d"
        name = getattr(o, f"name_{which}") or o.name
        betas = getattr(o, f"betas_{which}") or (o.beta1, o.beta2)
        fused = self.cfg.train.fused_optim and self.device.type == "cuda"
        return build_optimizer(params, o, self.lr(net), name=name, betas=tuple(betas), fused=fused)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees: DiffAugment of real and fake images alike (identity when off)."""
        for fn in self._augment:
            x = fn(x)
        return x

    def targets(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """D's BCE targets with soft labels and random flips; G's targets use real_label only."""
        m = self.model_cfg
        t = torch.full_like(logits, m.real_label if real else m.fake_label, dtype=torch.float32)
        if m.flip_prob > 0:
            flip = torch.rand(t.shape, device=t.device) < m.flip_prob
            t = torch.where(flip, m.fake_label if real else m.real_label, t)
        return t

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.model_cfg.z_dim, 1, 1, generator=generator)
        return z.to(self.device)

    def grid_inputs(self, seed: int) -> tuple[dict, int]:
        """Fixed inputs for sample grids (the same all run long) and the grid's number of columns:
        32 random samples, as the reports showed them; conditional families override this."""
        return {"z": self.noise(32, torch.Generator().manual_seed(seed))}, 8

    def generate(self, G: nn.Module, inputs: dict) -> torch.Tensor:
        return G(inputs["z"])


def bce(logits: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy from logits against a target (1 = real, 0 = fake), in fp32."""
    logits = logits.float()
    if not isinstance(target, torch.Tensor):
        target = torch.full_like(logits, target)
    return nn.functional.binary_cross_entropy_with_logits(logits, target)


def build_optimizer(params, optim_cfg, lr: float, name: str = "", betas: tuple = (),
                    fused: bool = False) -> torch.optim.Optimizer:
    name, betas = name or optim_cfg.name, betas or (optim_cfg.beta1, optim_cfg.beta2)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=optim_cfg.weight_decay,
                                **({"fused": True} if fused else {}))
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=optim_cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=optim_cfg.momentum, weight_decay=optim_cfg.weight_decay)
