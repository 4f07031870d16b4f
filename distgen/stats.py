"""Training statistics reported from anywhere, reduced across ranks only at log time.

    stats.report("D(x)", logits.sigmoid().mean())   # in a family's loss: no sync, no .item()
    means = stats.collect()                         # in the loop, every log.every steps

Values stay on the device as detached tensors until `collect`, so reporting never forces a
host sync (each `.item()` would).
"""
from __future__ import annotations

from collections import defaultdict

import torch

_sums: dict[str, list[torch.Tensor]] = defaultdict(list)
_counts: dict[str, list[torch.Tensor]] = defaultdict(list)


def report(name: str, value: torch.Tensor | float) -> None:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().mean()
    _sums[name].append(value)


def count(name: str, value: torch.Tensor | float) -> None:
    """A count (e.g. skipped samples): summed over the interval and over ranks, not averaged."""
    _counts[name].append(value.detach().float().sum() if isinstance(value, torch.Tensor) else float(value))


def collect_counts() -> dict[str, torch.Tensor]:
    """Sum of every counted name since the last call (this rank only), then reset."""
    out = {name: torch.stack([torch.as_tensor(v, dtype=torch.float32, device=_device(vals)) for v in vals]).sum()
           for name, vals in sorted(_counts.items())}
    _counts.clear()
    return out


def collect() -> dict[str, torch.Tensor]:
    """Mean of every reported name since the last collect (this rank only), then reset."""
    out = {name: torch.stack([torch.as_tensor(v, dtype=torch.float32, device=_device(vals)) for v in vals]).mean()
           for name, vals in sorted(_sums.items())}
    _sums.clear()
    return out


def _device(vals):
    return next((v.device for v in vals if isinstance(v, torch.Tensor)), torch.device("cpu"))
