"""What keeps long runs alive, shared by the loops: preemption signals and non-finite steps.

Preemption: SIGUSR1, SIGTERM and SIGINT set a flag (distgen/loops/signals.py, which also says who
sends which signal, and how launch/launcher.py and launch/slurm/train.sbatch pass them on); the loops
ask `preempted()` at every log and checkpoint boundary (not every step: with several processes it is
a collective and a host sync), all ranks agree (accelerate set_trigger / check_trigger), the loop
saves a checkpoint, the SLURM job is requeued, and every rank exits cleanly. So a signal is acted on
within min(log.every, run.checkpoint_every) steps: keep that many steps well inside the signal's lead
time. The requeued job runs the same command with --resume auto and continues from
checkpoints/latest.

Non-finite steps, without a host sync per step: the stepper (distgen/loops/stepper.py) finds on
the device whether a phase's (all-reduced) gradients hold inf/NaN (`nonfinite`), skips that
optimizer step on the device, and hands the flag to `record`, which keeps each phase's run of
non-finite steps in a row as a device tensor. `check`, at every log and checkpoint boundary (one
deliberate host sync there), raises the TrainingError naming the last good checkpoint once
`train.max_nonfinite` steps of one phase in a row were non-finite. Skipped steps never change the
weights, so a run is stopped at the first boundary after the limit is reached, with the
checkpoints it saved intact; `train.max_nonfinite: 0` turns the check off.
"""
from __future__ import annotations

import torch

from distgen.errors import TrainingError
from distgen.loops import signals


class Guard:
    def __init__(self, acc, cfg, run):
        self.acc, self.cfg, self.run = acc, cfg, run
        self._init_rows()
        signals.install()  # again (launch/train.py did at startup): a loop may be called directly

    def _init_rows(self) -> None:
        # per phase (a healthy G must not hide a broken D), on the device, updated in place (a captured
        # step's graph may hold them): the current run of non-finite steps in a row, and the longest
        # since the last check. One vector each, a slot per phase, so one round of every phase's steps
        # is recorded with two ops (record_round).
        self._phases: list[str] = []
        self._row_vec = self._worst_vec = None
        self._views: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # phase slot -> (row, worst), 0-d views
        self._snapshots: dict[tuple, list[torch.Tensor]] = {}  # buffers at the last boundary (repair_buffers)

    # -- preemption -------------------------------------------------------------------------

    def preempted(self) -> bool:
        """True on every rank once any rank has received SIGUSR1/SIGTERM/SIGINT. A collective with several
        processes (and a host sync): the loops call it on every rank at the same log/checkpoint steps."""
        if self.acc.num_processes == 1:
            return bool(signals.received())
        if signals.received():
            self.acc.set_trigger()
        return self.acc.check_trigger()

    def requeue(self, step: int) -> None:
        """After the checkpoint of `step`: say why, and have SLURM run the job again (signals.requeue)."""
        signals.requeue(self.acc, step)

    # -- non-finite steps -------------------------------------------------------------------

    def track(self, phases: list[str], device) -> None:
        """Make room for these phases' rows (before training: the vectors are then never reallocated)."""
        new = [p for p in phases if p not in self._phases]
        if not new:
            return
        grow = torch.zeros(len(new), device=device)
        self._row_vec = grow if self._row_vec is None else torch.cat([self._row_vec, grow])
        self._worst_vec = grow.clone() if self._worst_vec is None else torch.cat([self._worst_vec, grow])
        self._phases += new
        self._views = {i: (self._row_vec[i], self._worst_vec[i]) for i in range(len(self._phases))}

    def _slot(self, phase: str, like: torch.Tensor) -> int:
        if phase not in self._phases:
            self.track([phase], like.device)
        return self._phases.index(phase)

    def record(self, bad: torch.Tensor, phase: str = "") -> None:
        """One optimizer step of `phase`: `bad` (a 0-d float tensor, 1.0 or 0.0) says whether its gradients
        were non-finite in a way that counts toward the stop. Device arithmetic only: no host sync."""
        i = self._slot(phase, bad)  # first: it may make the views (self._views is read after it)
        row, worst = self._views[i]
        torch.addcmul(bad, row, bad, out=row)  # (row + 1) * bad: 0 after a finite step
        torch.maximum(worst, row, out=worst)

    def record_round(self, bad: torch.Tensor, phases: list[str]) -> None:
        """One optimizer step of each of `phases` (distinct), `bad` holding their flags in that order: two ops
        when they are every tracked phase in tracking order (the usual D, G iteration), else one step each."""
        if list(phases) == self._phases:
            torch.addcmul(bad, self._row_vec, bad, out=self._row_vec)
            torch.maximum(self._worst_vec, self._row_vec, out=self._worst_vec)
        else:
            for i, phase in enumerate(phases):
                self.record(bad[i], phase)

    def repair_buffers(self, modules: list) -> None:
        """At a boundary where buffers are read (log, checkpoint, samples, evaluation), before reading them:
        a skipped non-finite step leaves the weights as they were, but its forward already moved BatchNorm's
        running statistics (one NaN pixel makes running_mean NaN, and a momentum update never recovers
        from it, so every later evaluation would be NaN). Here every non-finite buffer element goes back
        to its value at the previous boundary, and the buffers are remembered for the next one. Device
        ops only, a few per buffer per boundary and none per step (a per-step snapshot would cost ops on
        every step; the statistics of the good steps since the last boundary are the price)."""
        bufs = [b for m in modules for b in m.buffers() if b.is_floating_point()]
        if not bufs:
            return
        key = tuple(id(b) for b in bufs)
        snap = self._snapshots.get(key)
        if snap is None:  # the loops call this once before the first step: remember the starting buffers
            self._snapshots[key] = [b.clone() for b in bufs]
            return
        for b, s in zip(bufs, snap):
            b.copy_(torch.where(torch.isfinite(b), b, s))
        torch._foreach_copy_(snap, bufs)

    def check(self, step: int) -> None:
        """At a log or checkpoint boundary (every rank, the same steps): raise a TrainingError naming the
        last good checkpoint if some phase had train.max_nonfinite non-finite steps in a row."""
        limit = self.cfg.train.max_nonfinite
        if limit <= 0 or self._worst_vec is None:
            return
        longest = self._worst_vec.tolist()  # deliberate host sync: per boundary
        self._worst_vec.copy_(self._row_vec)  # a run in a row goes on across boundaries
        for phase, n in zip(self._phases, longest):
            if n >= limit:
                latest = self.run.dir / "checkpoints" / "latest"
                last = latest.resolve().name if latest.exists() else "none yet"
                what = f"{phase} steps" if phase else "steps"
                raise TrainingError(f"{limit} {what} in a row had non-finite gradients (found at step {step}); "
                                    f"stopping. Last good checkpoint: {last} in {self.run.dir / 'checkpoints'}. "
                                    f"Lower the learning rate or check the data, then --resume auto")


def nonfinite(grads: list[torch.Tensor], found: torch.Tensor | None = None) -> torch.Tensor:
    """1.0 if any of these gradients holds inf/NaN, else 0.0: a 0-d float32 tensor on their device,
    computed without a host sync, in ONE op: the GradScaler's own fused check
    (`_amp_foreach_non_finite_check_and_unscale_`, here with a scale of 1). `found` (zeros) receives the
    flag in place when given (the stepper's preallocated slots), else a new tensor is made."""
    if found is None:
        found = torch.zeros((), device=grads[0].device)
    by_dtype: dict[torch.dtype, list] = {}
    for g in grads:  # the kernel takes one dtype per call (as GradScaler groups them); usually one group
        by_dtype.setdefault(g.dtype, []).append(g)
    for group in by_dtype.values():
        torch._amp_foreach_non_finite_check_and_unscale_(group, found, _one(found.device))
    return found


_ONES: dict[torch.device, torch.Tensor] = {}


def _one(device) -> torch.Tensor:
    """A 1.0 on `device`, made once (the check's inverse scale: gradients multiplied by 1 stay as they are)."""
    one = _ONES.get(device)
    if one is None:
        one = _ONES[device] = torch.ones((), device=device)
    return one
