"""A wait for work that one rank does alone, under a timeout of its own (the adversarial loop's
in-training FID/IS/KID/PRC, whose metrics rank 0 computes from the gathered features).

    wait = LongWait(cfg.eval.timeout)   # every rank, at the same point (it creates a process group)
    ...; wait()                         # every rank: returns when all have arrived

Without it the other ranks run ahead into the next step's collective and wait there under the default
group's timeout (run.collective_timeout, sized to notice a dead peer in a training step, 600 s): at
50,000 samples with PRC that killed the job at its first evaluation. Hand-written over
torch.distributed because Accelerate's wait_for_everyone takes no timeout: a barrier in a gloo
group made for this wait, whose timeout is eval.timeout; gloo waits on the CPU, beside any backend.
"""
from __future__ import annotations

from datetime import timedelta

import torch.distributed as dist


class LongWait:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.group = None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self.group = dist.new_group(backend="gloo", timeout=timedelta(seconds=seconds))

    def __call__(self) -> None:
        if self.group is not None:
            dist.barrier(group=self.group)
