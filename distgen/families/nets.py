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


class SelfAttention(nn.Module):
    """SAGAN self-attention: every position attends to all others; starts as identity (gamma = 0)."""

    def __init__(self, ch: int, spectral: bool = False):
        super().__init__()
        wrap = sn if spectral else (lambda m: m)
        self.q, self.k = wrap(nn.Conv2d(ch, max(ch // 8, 1), 1)), wrap(nn.Conv2d(ch, max(ch // 8, 1), 1))
        self.v = wrap(nn.Conv2d(ch, ch, 1))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.q(x).flatten(2), self.k(x).flatten(2), self.v(x).flatten(2)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (n, hw, hw)
        return x + self.gamma * (v @ attn.transpose(1, 2)).view(n, c, h, w)


def sn(module: nn.Module) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(module)


def generator(in_dim: int, channels: int, image_size: int, width: int, dropout: float = 0.0,
              spectral: bool = False, attention_res: int = 0) -> nn.Sequential:
    """(N, in_dim, 1, 1) -> (N, channels, size, size) in [-1, 1].

    Options beyond the reports' net: dropout after hidden layers, spectral norm on every conv and
    a self-attention block after the layer whose output side is `attention_res` (SAGAN)."""
    n = stages(image_size)
    wrap = sn if spectral else (lambda m: m)
    ch, res = width * 2 ** (n - 1), 4

    def after(ch_out: int, res_out: int) -> list[nn.Module]:
        extra = [nn.BatchNorm2d(ch_out), nn.ReLU(True)] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        return extra + ([SelfAttention(ch_out, spectral)] if res_out == attention_res else [])

    layers = [wrap(nn.ConvTranspose2d(in_dim, ch, 4, 1, 0, bias=False)), *after(ch, res)]
    for _ in range(n - 1):
        res *= 2
        layers += [wrap(nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False)), *after(ch // 2, res)]
        ch //= 2
    layers += [wrap(nn.ConvTranspose2d(ch, channels, 4, 2, 1, bias=False)), nn.Tanh()]
    return init_weights(nn.Sequential(*layers))


NORMS = {"batch": nn.BatchNorm2d, "layer": lambda ch: nn.GroupNorm(1, ch), "none": lambda ch: nn.Identity()}


def discriminator_trunk(channels: int, image_size: int, width: int, norm: str = "batch",
                        spectral: bool = False, attention_res: int = 0) -> tuple[nn.Sequential, int]:
    """(N, channels, size, size) -> (N, C, 4, 4); returns the trunk and C.

    `norm`: batch (DCGAN), layer or none (critics with a per-sample gradient penalty, SAGAN)."""
    n = stages(image_size)
    wrap = sn if spectral else (lambda m: m)
    res = image_size // 2
    layers = [wrap(nn.Conv2d(channels, width, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, True)]
    ch = width
    for _ in range(n - 1):
        if res == attention_res:
            layers.append(SelfAttention(ch, spectral))
        layers += [wrap(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False)), NORMS[norm](ch * 2), nn.LeakyReLU(0.2, True)]
        ch, res = ch * 2, res // 2
    return init_weights(nn.Sequential(*layers)), ch


def head(in_ch: int, out: int, spectral: bool = False) -> nn.Module:
    """4x4 feature map -> (N, out) logits."""
    conv = nn.Conv2d(in_ch, out, 4, 1, 0, bias=False)
    return init_weights(nn.Sequential(sn(conv) if spectral else conv, nn.Flatten()))


class Discriminator(nn.Module):
    """Shared trunk with named heads; forward returns one logit tensor per head."""

    def __init__(self, channels: int, image_size: int, width: int, heads: dict[str, int], norm: str = "batch",
                 spectral: bool = False, attention_res: int = 0):
        super().__init__()
        self.trunk, ch = discriminator_trunk(channels, image_size, width, norm, spectral, attention_res)
        self.heads = nn.ModuleDict({name: head(ch, out, spectral) for name, out in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk(x)
        return {name: h_(h) for name, h_ in self.heads.items()}


def init_weights(module: nn.Module) -> nn.Module:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and not isinstance(m, SelfAttention):
            weight = m.parametrizations.weight.original if nn.utils.parametrize.is_parametrized(m) else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
