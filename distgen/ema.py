"""The generator EMA that samples and evaluation use (train.ema_kimg, train.ema_rampup).

    accelerate launch launch/train.py recipes/dcgan_celeba.yaml train.ema_kimg=355

As stylegan2-ada's training loop does it: after every generator step the EMA moves its
parameters towards G's with a decay set by a half-life counted in images,

    ema_nimg = ema_kimg * 1000, during the ramp-up at most ema_rampup * (images seen so far)
    beta     = 0.5 ** (images per step / ema_nimg)
    p_ema    = beta * p_ema + (1 - beta) * p        buffers (BatchNorm statistics, spectral norm's u, v): copied

"Images per step" is the global batch, train.batch_size x processes x train.grad_accum, so a
recipe's EMA means the same at any batch size and GPU count. Buffers are copied, never averaged:
an average of running statistics (or of power-iteration vectors) belongs to no weights.

torch's AveragedModel is not used: with use_buffers=True it averages the buffers, with False it
leaves them as they were when it was built, and its decay is one number for the whole run.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from distgen.generation import plain_batchnorm


class EMA:
    """An exponential moving average of G. `module` holds plain BatchNorm, never SyncBatchNorm:
    it only generates, and generating runs no collective (distgen.generation)."""

    def __init__(self, G: nn.Module, half_life_kimg: float, rampup: float, images_per_step: int):
        self.module = plain_batchnorm(copy.deepcopy(G)).requires_grad_(False)
        self.half_life_kimg, self.rampup, self.images_per_step = half_life_kimg, rampup, images_per_step
        self.nimg = 0  # images the generator has been trained on so far

    def beta(self) -> float:
        ema_nimg = self.half_life_kimg * 1000
        if self.rampup > 0:
            ema_nimg = min(ema_nimg, self.nimg * self.rampup)
        return 0.5 ** (self.images_per_step / max(ema_nimg, 1e-8))

    @torch.no_grad()
    def update(self, G: nn.Module) -> None:
        """After a generator step: average G's parameters in, copy its buffers."""
        mine, theirs = list(self.module.parameters()), list(G.parameters())
        torch._foreach_lerp_(mine, theirs, 1.0 - self.beta())  # one kernel for all (as torch's own EMA helper)
        buffers = list(self.module.buffers())
        if buffers:  # one op for all buffers, not a copy_ each (every op costs a launch on a small net)
            torch._foreach_copy_(buffers, list(G.buffers()))
        self.nimg += self.images_per_step

    # Accelerate checkpoints it (register_for_checkpointing); load_run reads the "module." keys.
    def state_dict(self) -> dict:
        return {**{f"module.{k}": v for k, v in self.module.state_dict().items()},
                "nimg": torch.tensor(self.nimg, dtype=torch.int64)}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict({k[len("module."):]: v for k, v in state.items() if k.startswith("module.")})
        if "nimg" in state:
            self.nimg = int(state["nimg"])
        else:  # a checkpoint of torch's AveragedModel (before this module): it counted updates
            self.nimg = int(state.get("n_averaged", 0)) * self.images_per_step
