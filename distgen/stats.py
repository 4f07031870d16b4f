"""Training statistics reported from anywhere, reduced across ranks only at log time.

    stats.report("D(x)", logits.sigmoid().mean())   # in a family's loss: no sync, no .item()
    stats.count("data/skipped", n)                  # a count: summed, not averaged
    means, counts = stats.reduce(device, sum_over_ranks, gather)   # in Run.log, every log.every steps

Values stay where they were reported (detached tensors, or Python numbers) until the interval is
packed, so reporting never forces a host sync (each `.item()` would). Packing puts everything on
ONE device, the one the caller names (the accelerator's), whatever it was reported on: a CUDA loss
beside a Python float or a CPU tensor is moved, never stacked as it is.

The rule for names: a name is reduced over the ranks that reported it. `reduce` first gathers every
rank's names (a small all-gather of strings, once per log), so a name reported on some ranks only
(a family that reports a statistic only when a batch holds some class, say) can neither hang nor
shift the other names' values: every rank sends the same names in the same order, with a zero
report count where it reported nothing. The logged value of a reported name is the sum of its
values over the interval and over all ranks divided by how many there were (equal to the mean of
the ranks' means when every rank reports it equally often); a counted name is the plain sum.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch

_sums: dict[str, list[torch.Tensor | float]] = defaultdict(list)
_counts: dict[str, list[torch.Tensor | float]] = defaultdict(list)


def report(name: str, value: torch.Tensor | float) -> None:
    """One value of `name` (a tensor is averaged first, and stays on its device; a number stays a number).
    Logged as the mean over the interval and over the ranks that reported it: a name may be reported on
    some ranks only, or not every step (the rule: module docstring)."""
    _sums[name].append(value.detach().float().mean() if isinstance(value, torch.Tensor) else float(value))


def count(name: str, value: torch.Tensor | float) -> None:
    """A count (e.g. skipped samples): summed over the interval and over ranks, not averaged."""
    _counts[name].append(value.detach().float().sum() if isinstance(value, torch.Tensor) else float(value))


_last_device = torch.device("cpu")


def _device() -> torch.device:
    """The device of the first reported tensor; with none, that of the previous collect (CPU at first)."""
    global _last_device
    for group in (_sums, _counts):
        for vals in group.values():
            for v in vals:
                if isinstance(v, torch.Tensor):
                    _last_device = v.device
                    return _last_device
    return _last_device


def _on(vals: list, device: torch.device) -> torch.Tensor:
    """The values of one name as one float32 vector on `device`: tensors moved, numbers in one tensor."""
    tensors = [v.to(device=device, dtype=torch.float32) for v in vals if isinstance(v, torch.Tensor)]
    numbers = [v for v in vals if not isinstance(v, torch.Tensor)]
    parts = ([torch.stack(tensors)] if tensors else []) + (
        [torch.tensor(numbers, dtype=torch.float32, device=device)] if numbers else [])
    return torch.cat(parts) if parts else torch.zeros(0, device=device)


def collect(device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Mean of every reported name since the last collect (this rank only), all on one device
    (default: the device the tensors were reported on), then reset."""
    device = torch.device(device) if device is not None else _device()
    out = {name: _on(vals, device).mean() for name, vals in sorted(_sums.items())}
    _sums.clear()
    return out


def collect_counts(device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Sum of every counted name since the last call (this rank only), on one device, then reset."""
    device = torch.device(device) if device is not None else _device()
    out = {name: _on(vals, device).sum() for name, vals in sorted(_counts.items())}
    _counts.clear()
    return out


def names() -> tuple[list[str], list[str]]:
    """This rank's reported and counted names of the interval so far, sorted."""
    return sorted(_sums), sorted(_counts)


def pack(device: torch.device | str, reported: list[str] | None = None,
         counted: list[str] | None = None) -> torch.Tensor:
    """This rank's interval as one float32 vector on `device`, then reset: (sum, number of reports) of
    every name in `reported`, then the sum of every name in `counted` (defaults: this rank's names);
    zeros for names this rank did not report."""
    device = torch.device(device)
    mine_reported, mine_counted = names()
    reported = mine_reported if reported is None else reported
    counted = mine_counted if counted is None else counted
    zero = torch.zeros((), device=device)
    rows = []
    for name in reported:
        vals = _on(_sums.get(name, []), device)
        rows += [vals.sum(), torch.full((), float(len(vals)), device=device)]
    for name in counted:
        rows.append(_on(_counts.get(name, []), device).sum() if name in _counts else zero)
    _sums.clear()
    _counts.clear()
    return torch.stack(rows) if rows else torch.zeros(0, device=device)


def reduce(device: torch.device | str,
           sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
           gather: Callable[[object], list] = lambda obj: [obj]) -> tuple[dict[str, float], dict[str, float]]:
    """(means, counts) of this interval over all ranks, then reset. A collective: every rank calls it
    at the same step. `sum_over_ranks` all-reduces a tensor on `device` by sum; `gather` returns the
    list of every rank's object (e.g. accelerate.utils.gather_object on [obj]). One process: the defaults."""
    everyone = gather(names())  # the union of names, in one order on every rank (see the module doc)
    reported = sorted(set().union(*(r for r, _ in everyone)))
    counted = sorted(set().union(*(c for _, c in everyone)))
    values = pack(device, reported, counted)
    if not len(values):
        return {}, {}
    totals = sum_over_ranks(values).tolist()  # deliberate host sync: once per log interval
    means = {name: totals[2 * i] / totals[2 * i + 1] for i, name in enumerate(reported) if totals[2 * i + 1] > 0}
    counts = dict(zip(counted, totals[2 * len(reported):]))
    return means, counts
