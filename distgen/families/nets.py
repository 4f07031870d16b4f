"""The reports' DCGAN networks, sized for any power-of-two image side and channel count.

At 64x64 RGB with width 64 these are exactly the reports' nets:
G: ConvTranspose 100->512->256->128->64->3 (BatchNorm+ReLU, tanh);
D: Conv 3->64->128->256->512 (LeakyReLU 0.2, BatchNorm from the second layer) -> 4x4 head.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from distgen.errors import ConfigError


def stages(image_size: int) -> int:
    """Number of stride-2 stages between 4x4 and the image side."""
    n = math.log2(image_size) if image_size > 0 else 0
    if image_size < 8 or not n.is_integer():
        raise ConfigError(f"DCGAN nets need a power-of-two image side >= 8 (data.image_size); got {image_size}")
    return int(n) - 2


def generator(in_dim: int, channels: int, image_size: int, width: int) -> nn.Sequential:
    """(N, in_dim, 1, 1) -> (N, channels, size, size) in [-1, 1]."""
    n = stages(image_size)
    ch = width * 2 ** (n - 1)
    layers = [nn.ConvTranspose2d(in_dim, ch, 4, 1, 0, bias=False), nn.BatchNorm2d(ch), nn.ReLU(True)]
    for _ in range(n - 1):
        layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
        ch //= 2
    layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False), nn.Tanh()]
    return init_weights(nn.Sequential(*layers))


NORMS = {"batch": nn.BatchNorm2d, "layer": lambda ch: nn.GroupNorm(1, ch), "none": lambda ch: nn.Identity()}


def discriminator_trunk(channels: int, image_size: int, width: int, norm: str = "batch") -> tuple[nn.Sequential, int]:
    """(N, channels, size, size) -> (N, C, 4, 4); returns the trunk and C.

    `norm`: batch (DCGAN), layer or none (critics with a per-sample gradient penalty)."""
    n = stages(image_size)
    layers = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    ch = width
    for _ in range(n - 1):
        layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), NORMS[norm](ch * 2), nn.LeakyReLU(0.2, True)]
        ch *= 2
    return init_weights(nn.Sequential(*layers)), ch


def head(in_ch: int, out: int) -> nn.Module:
    """4x4 feature map -> (N, out) logits."""
    return init_weights(nn.Sequential(nn.Conv2d(in_ch, out, 4, 1, 0, bias=False), nn.Flatten()))


class Discriminator(nn.Module):
    """Shared trunk with named heads; forward returns one logit tensor per head."""

    def __init__(self, channels: int, image_size: int, width: int, heads: dict[str, int], norm: str = "batch"):
        super().__init__()
        self.trunk, ch = discriminator_trunk(channels, image_size, width, norm)
        self.heads = nn.ModuleDict({name: head(ch, out) for name, out in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {name: h_(h) for name, h_ in self.heads.items()}


def init_weights(module: nn.Module) -> nn.Module:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
