"""Generating images for grids and evaluation, and writing PNG grids.

BatchNorm generators sample with batch statistics on a throw-away copy: after short runs the
running averages lag the weights (DESIGN.md measured worse digits in eval mode), and sampling
must not touch the training copy's buffers, or a run with grids would differ from one without.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torchvision.utils import save_image


@torch.no_grad()
def generate(family, G: nn.Module, inputs: dict, chunk: int = 500) -> torch.Tensor:
    """Images in [-1, 1] for `inputs` (a dict of equally long tensors), computed in chunks."""
    G = copy.deepcopy(G).train()
    n = len(next(iter(inputs.values())))
    out = [family.generate(G, {k: v[i:i + chunk] for k, v in inputs.items()}) for i in range(0, n, chunk)]
    return torch.cat(out).float().clamp(-1, 1)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images * 0.5 + 0.5, path, nrow=nrow, padding=2, pad_value=1.0)
    return path
