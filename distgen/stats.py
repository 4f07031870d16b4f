"""Training statistics reported from anywhere, accumulated on the device, reduced across ranks at log time.

    stats.report("D(x)", logits.sigmoid())        # in a family's loss: no sync, no .item(), no extra op
    stats.count("data/skipped", n)                # a count: summed, not averaged
    stats.flush()                                 # the stepper, once per iteration: ONE device op
                                                  # (one per repetition of a name: WGAN-GP's critic)
    means, counts = stats.reduce(device, sum_over_ranks, gather)   # in Run.log, every log.every steps

Cost model. A GPU that trains the reports' small nets waits on the host, and every dispatched op costs a
kernel launch whatever it computes. So reporting dispatches nothing: `report` and `count` only remember
the tensor, and `flush` adds everything remembered since the last flush into per-name accumulators that
live on the device with one `torch._foreach_add_` (one launch for all names). A tensor is accumulated as it
is (its elements summed at log time, each element counting as one report: the logged D(x) of a batch of 64
sigmoids is their mean), so a family need not call `.mean()` per statistic per step. The accumulators are
created once and zeroed in place at log time, so a captured CUDA graph (distgen/loops/capture.py) can add
into them on every replay; `recount` counts what a captured step reported, once per replay.

Packing puts everything on ONE device, the one the caller names (the accelerator's), whatever it was
reported on: a CUDA loss beside a Python float or a CPU tensor is moved, never stacked as it is.

The rule for names: a name is reduced over the ranks that reported it. `reduce` first gathers every
rank's names (a small all-gather of strings, once per log), so a name reported on some ranks only
(a family that reports a statistic only when a batch holds some class, say) can neither hang nor
shift the other names' values: every rank sends the same names in the same order, with a zero
report count where it reported nothing. The logged value of a reported name is the sum of its
values over the interval and over all ranks divided by how many there were; a counted name is the
plain sum.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch

# what was reported since the last flush: (kind, name, value); kind "mean" (report) or "sum" (count)
_pending: list[tuple[str, str, torch.Tensor]] = []
# device accumulators, one per (kind, name, device, shape, dtype): created once, zeroed in place at log time
_slots: dict[tuple, torch.Tensor] = {}
_slot_count: dict[tuple, int] = defaultdict(int)  # elements accumulated into each slot (host-side, exact)
# Python numbers: host-side (kind, name) -> [sum, count]
_numbers: dict[tuple[str, str], list[float]] = {}


def report(name: str, value: torch.Tensor | float) -> None:
    """Values of `name`; logged as the mean over the interval and over the ranks that reported it (every
    element of a tensor is one value). Dispatches no op: the tensor is accumulated at the next flush."""
    _remember("mean", name, value)


def count(name: str, value: torch.Tensor | float) -> None:
    """A count (e.g. skipped samples): summed over the interval and over ranks, not averaged."""
    _remember("sum", name, value)


def _remember(kind: str, name: str, value) -> None:
    if isinstance(value, torch.Tensor):
        _pending.append((kind, name, value))
    else:
        entry = _numbers.setdefault((kind, name), [0.0, 0])
        entry[0] += float(value)
        entry[1] += 1


def flush() -> list[tuple[str, str, torch.Tensor]]:
    """Add every tensor reported since the last flush into its device accumulator: one foreach op per
    device (and per repetition of a name). Returns what it added (a captured step counts each replay
    with `recount`)."""
    if not _pending:
        return []
    done = list(_pending)
    _pending.clear()
    # One foreach call per device and per repetition: a name reported k times since the last flush (a
    # phase repeated, e.g. WGAN-GP's critic steps) goes into k calls, never twice into one. On CUDA a
    # foreach kernel updates its tensors in parallel chunks, and two entries of one list that are the
    # same accumulator would race and lose additions.
    calls: dict[tuple[torch.device, int], tuple[list, list]] = {}
    seen: dict[tuple, int] = defaultdict(int)
    for kind, name, value in done:
        key = (kind, name, value.device, tuple(value.shape), value.dtype)
        slot = _slots.get(key)
        if slot is None:  # the first report of this name and shape: one allocation, then reused forever
            # float32 for floating values (bf16 statistics add up in fp32), int64 for integer counts and bools
            dtype = torch.float32 if value.is_floating_point() else torch.int64
            slot = _slots[key] = torch.zeros(value.shape, dtype=dtype, device=value.device)
        _slot_count[key] += max(value.numel(), 1)
        slots, values = calls.setdefault((value.device, seen[key]), ([], []))
        seen[key] += 1
        slots.append(slot)
        values.append(value)
    with torch.no_grad():
        for slots, values in calls.values():
            torch._foreach_add_(slots, values)
    return done


def recount(record: list[tuple[str, str, torch.Tensor]], times: int = 1) -> None:
    """Count `times` more what `flush` returned, without adding values: a captured CUDA graph adds them
    into the accumulators on every replay, and only the host-side counts need to follow (-1 undoes the
    count of the capture itself, which recorded the step without running it)."""
    for kind, name, value in record:
        _slot_count[(kind, name, value.device, tuple(value.shape), value.dtype)] += times * max(value.numel(), 1)


def _totals(device: torch.device, kinds=("mean", "sum")) -> dict[tuple[str, str], tuple[torch.Tensor, float]]:
    """(kind, name) -> (sum as a 0-d float32 tensor on `device`, count) of the interval so far, for these
    kinds; then reset them (the accumulators zeroed in place: captured graphs keep adding into them)."""
    flush()
    sums: dict[tuple[str, str], list] = defaultdict(list)
    counts: dict[tuple[str, str], float] = defaultdict(float)
    read = []
    for key, slot in _slots.items():
        if key[0] not in kinds:
            continue
        read.append(slot)
        n = _slot_count.pop(key, 0)
        if n:
            sums[key[:2]].append(slot.sum().to(device=device, dtype=torch.float32))
            counts[key[:2]] += n
    for key in [k for k in _numbers if k[0] in kinds]:
        total, n = _numbers.pop(key)
        sums[key].append(torch.tensor(total, dtype=torch.float32, device=device))
        counts[key] += n
    if read:
        torch._foreach_zero_(read)
    return {key: (torch.stack(vals).sum() if len(vals) > 1 else vals[0], counts[key]) for key, vals in sums.items()}


_last_device = torch.device("cpu")


def _device() -> torch.device:
    """The device of the first reported tensor; with none, that of the previous collect (CPU at first)."""
    global _last_device
    for _, _, value in _pending:
        _last_device = value.device
        return _last_device
    for key in _slots:
        if _slot_count.get(key):
            _last_device = key[2]
            return _last_device
    return _last_device


def collect(device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Mean of every reported name since the last collect (this rank only), all on one device (default:
    the device the tensors were reported on), then reset."""
    device = torch.device(device) if device is not None else _device()
    return {name: total / n for (_, name), (total, n) in sorted(_totals(device, ("mean",)).items())}


def collect_counts(device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Sum of every counted name since the last call (this rank only), on one device, then reset."""
    device = torch.device(device) if device is not None else _device()
    return {name: total for (_, name), (total, _) in sorted(_totals(device, ("sum",)).items())}


def names() -> tuple[list[str], list[str]]:
    """This rank's reported and counted names of the interval so far, sorted."""
    keys = {(k, n) for k, n, _ in _pending} | {key[:2] for key in _slots if _slot_count.get(key)} | set(_numbers)
    return sorted(n for k, n in keys if k == "mean"), sorted(n for k, n in keys if k == "sum")


def pack(device: torch.device | str, reported: list[str] | None = None,
         counted: list[str] | None = None) -> torch.Tensor:
    """This rank's interval as one float32 vector on `device`, then reset: (sum, number of values) of
    every name in `reported`, then the sum of every name in `counted` (defaults: this rank's names);
    zeros for names this rank did not report."""
    device = torch.device(device)
    mine_reported, mine_counted = names()
    reported = mine_reported if reported is None else reported
    counted = mine_counted if counted is None else counted
    totals = _totals(device)
    zero = torch.zeros((), device=device)
    rows = []
    for name in reported:
        total, n = totals.get(("mean", name), (zero, 0))
        rows += [total, torch.full((), float(n), device=device)]
    for name in counted:
        rows.append(totals.get(("sum", name), (zero, 0))[0])
    return torch.stack(rows) if rows else torch.zeros(0, device=device)


def reduce(device: torch.device | str,
           sum_over_ranks: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
           gather: Callable[[object], list] = lambda obj: [obj]) -> tuple[dict[str, float], dict[str, float]]:
    """(means, counts) of this interval over all ranks, then reset. A collective: every rank calls it
    at the same step. `sum_over_ranks` all-reduces a tensor on `device` by sum; `gather` returns the
    list of every rank's object (e.g. accelerate.utils.gather_object on [obj]). One process: the defaults."""
    flush()
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
