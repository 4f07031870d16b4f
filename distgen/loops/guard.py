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
        # per phase (a healthy G must not hide a broken D), on the device: the current run of non-finite
        # steps in a row, and the longest since the last check
        self._row: dict[str, torch.Tensor] = {}
        self._worst: dict[str, torch.Tensor] = {}
        signals.install()  # again (launch/train.py did at startup): a loop may be called directly

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

    def record(self, bad: torch.Tensor, phase: str = "") -> None:
        """One optimizer step of `phase`: `bad` (a 0-d float tensor, 1.0 or 0.0) says whether its gradients
        were non-finite in a way that counts toward the stop. Device arithmetic only: no host sync."""
        row = self._row.get(phase)
        row = bad if row is None else (row + 1) * bad  # the run in a row, 0 after a finite step
        self._row[phase] = row
        worst = self._worst.get(phase)
        self._worst[phase] = row if worst is None else torch.maximum(worst, row)

    def check(self, step: int) -> None:
        """At a log or checkpoint boundary (every rank, the same steps): raise a TrainingError naming the
        last good checkpoint if some phase had train.max_nonfinite non-finite steps in a row."""
        limit = self.cfg.train.max_nonfinite
        if limit <= 0 or not self._worst:
            return
        phases = list(self._worst)
        longest = torch.stack([self._worst[p] for p in phases]).tolist()  # deliberate host sync: per boundary
        self._worst = dict(self._row)  # a run in a row goes on across boundaries
        for phase, n in zip(phases, longest):
            if n >= limit:
                latest = self.run.dir / "checkpoints" / "latest"
                last = latest.resolve().name if latest.exists() else "none yet"
                what = f"{phase} steps" if phase else "steps"
                raise TrainingError(f"{limit} {what} in a row had non-finite gradients (found at step {step}); "
                                    f"stopping. Last good checkpoint: {last} in {self.run.dir / 'checkpoints'}. "
                                    f"Lower the learning rate or check the data, then --resume auto")


def nonfinite(grads: list[torch.Tensor]) -> torch.Tensor:
    """1.0 if any of these gradients holds inf/NaN, else 0.0: a 0-d float32 tensor on their device,
    computed without a host sync. One fused norm over all gradients (torch's foreach kernels) instead of
    an isfinite per tensor; a norm that overflows fp32 (gradients ~1e19) also counts as non-finite,
    which it is in effect."""
    if any(g.dtype in (torch.float16, torch.bfloat16) for g in grads):  # their norm could overflow
        ok = torch.stack([torch.isfinite(g).all() for g in grads]).all()
    else:
        ok = torch.nn.utils.get_total_norm(grads).isfinite()
    return (~ok).float()
