"""How every sample grid and every evaluated image is generated: the sampling and evaluation invariants.

    from distgen.generation import generate, generate_range, save_grid, save_images

Callers: the adversarial loop (grids on the main process, in-training FID on every rank),
launch/evaluate.py, launch/sample.py and distgen/evaluation/fidelity.py. The rules, kept here and nowhere else:

1. A throw-away copy. Images come from `sampler(G)`, a deep copy made per call; the generator
   being trained (or its EMA) never runs, so its BatchNorm buffers are the same whether or not
   a run draws grids or measures FID.
2. Batch statistics on plain BatchNorm. The copy runs in train mode: BatchNorm normalises with the
   statistics of the batch being generated (measured on digits: eval mode drew worse digits, as
   after short runs the running averages lag the weights). SyncBatchNorm
   layers (train.sync_bn on several processes) become plain BatchNorm on the copy.
3. No collectives. Because of 2, generating never talks to the other ranks: a grid drawn by the
   main process alone cannot hang, and ranks generating slices of different sizes cannot either.
4. Fixed chunks. Images CHUNK*i .. CHUNK*(i+1)-1 of a set are always generated together, in one
   call, whichever rank generates them. With batch statistics an image depends on its batch, so
   this is what makes image k the same on 1 or N ranks, in training or in launch/evaluate.py.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torchvision.utils import save_image

from distgen.sync_batchnorm import SyncBatchNorm, share_state

CHUNK = 500  # images per generator call (rule 4); a constant, never derived from the world size


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """Plain BatchNorm of any input rank, what a SyncBatchNorm layer becomes on a sampling copy.

    SyncBatchNorm does not record which BatchNorm{1,2,3}d it replaced (torch has no inverse of
    convert_sync_batchnorm); all of them compute the same, they only check the input rank."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


def plain_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every SyncBatchNorm (torch's or distgen.sync_batchnorm's) replaced by BatchNorm sharing its parameters and buffers
    (in place for children; returns the replacement when `module` itself is one)."""
    if isinstance(module, (nn.SyncBatchNorm, SyncBatchNorm)):
        return share_state(module, BatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                             module.track_running_stats))
    for name, child in module.named_children():
        module.add_module(name, plain_batchnorm(child))
    return module


def sampler(G: nn.Module) -> nn.Module:
    """The copy of G that generates (rules 1 and 2): deep copy, plain BatchNorm, train mode, no grads."""
    return plain_batchnorm(copy.deepcopy(G)).train().requires_grad_(False)


@torch.no_grad()
def generate_range(family, G: nn.Module, inputs: dict, start: int, stop: int) -> torch.Tensor:
    """Images start..stop-1 (float, [-1, 1]) of the set `inputs` (a dict of equally long tensors),
    each computed in its fixed chunk of CHUNK images (rule 4), on a sampling copy of G."""
    copy_ = sampler(G)
    parts = []
    for lo in range(start // CHUNK * CHUNK, stop, CHUNK):
        chunk = {k: v[lo:lo + CHUNK] for k, v in inputs.items()}
        n = len(next(iter(chunk.values())))
        images = family.generate(copy_, chunk)
        per = len(images) // max(n, 1)  # images per input: several for image-to-image grids (CycleGAN, StarGAN)
        parts.append(images[max(start - lo, 0) * per:(min(stop, lo + n) - lo) * per])
    if not parts:
        return torch.zeros(0)
    return torch.cat(parts).float().clamp(-1, 1)


def generate(family, G: nn.Module, inputs: dict) -> torch.Tensor:
    """All images of `inputs` (float, [-1, 1]): a grid, or a set one process generates alone."""
    return generate_range(family, G, inputs, 0, len(next(iter(inputs.values()))))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images * 0.5 + 0.5, path, nrow=nrow, padding=2, pad_value=1.0)
    return path


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] N C H W -> uint8 N H W C, rounded as torchvision's save_image rounds."""
    return (images.float() * 0.5 + 0.5).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def save_images(images: torch.Tensor, paths: list[Path]) -> None:
    """One PNG per image ([-1, 1] N C H W): grey images as one-channel PNGs, RGB as RGB."""
    for pixels, path in zip(to_uint8(images).numpy(), paths):
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
