"""Splitting evaluation work over ranks and putting the gathered rows back in global order.

`gather` is any callable that all-gathers one tensor of the same shape from every rank and returns
them concatenated in rank order (`accelerator.gather`; the identity for one process). Ranks may hold
different numbers of rows, so the counts go first and the rows are padded to the largest count.
"""
from __future__ import annotations

from typing import Callable

import torch

Gather = Callable[[torch.Tensor], torch.Tensor]


def identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def my_slice(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Contiguous share [start, stop) of n items for this rank; shares differ by at most one."""
    return n * rank // world_size, n * (rank + 1) // world_size


def gather_rows(local: torch.Tensor, gather: Gather, world_size: int, interleaved: bool = False) -> torch.Tensor:
    """All ranks' rows in global order, on every rank.

    contiguous: rank r holds a block (my_slice); interleaved: rank r holds items r, r + world, ...
    (how distgen.data.eval_batches splits a split)."""
    if world_size == 1:
        return gather(local)
    counts = gather(torch.tensor([len(local)], dtype=torch.long)).cpu().tolist()
    assert len(counts) == world_size, f"gather returned {len(counts)} counts for {world_size} ranks"
    width = max(counts)
    padded = torch.cat([local, local.new_zeros(width - len(local), *local.shape[1:])])
    every = gather(padded).cpu()
    blocks = [every[r * width:r * width + c] for r, c in enumerate(counts)]
    if not interleaved:
        return torch.cat(blocks)
    out = local.new_empty(sum(counts), *local.shape[1:]).cpu()
    for r, block in enumerate(blocks):
        out[r::world_size][:len(block)] = block  # item j of rank r is global item j * world + r
    return out
