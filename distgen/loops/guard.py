"""What keeps long runs alive, shared by the loops: preemption signals and non-finite steps.

Preemption: SIGUSR1, SIGTERM and SIGINT set a flag (distgen/loops/signals.py, which also says who
sends which signal, and how launch/launcher.py and launch/slurm/train.sbatch pass them on); at the
next step boundary the loop asks, all ranks agree (accelerate set_trigger / check_trigger), the loop
saves a checkpoint, the SLURM job is requeued, and every rank exits cleanly. The requeued job runs
the same command with --resume auto and continues from checkpoints/latest.

Non-finite steps: after the (all-reduced) gradients of a phase are computed, a step whose
gradients are not finite is skipped and counted; `train.max_nonfinite` in a row stop the run with
a TrainingError that names the last good checkpoint. The check costs one host sync per optimizer
step; `train.max_nonfinite: 0` turns it off.
"""
from __future__ import annotations

import torch

from distgen.errors import TrainingError
from distgen.loops import signals


class Guard:
    def __init__(self, acc, cfg, run):
        self.acc, self.cfg, self.run = acc, cfg, run
        self.nonfinite_in_a_row: dict[str, int] = {}  # per phase: a healthy G must not hide a broken D
        signals.install()  # again (launch/train.py did at startup): a loop may be called directly

    # -- preemption -------------------------------------------------------------------------

    def preempted(self) -> bool:
        """True on every rank once any rank has received SIGUSR1/SIGTERM/SIGINT (agreed at a step boundary)."""
        if self.acc.num_processes == 1:
            return bool(signals.received())
        if signals.received():
            self.acc.set_trigger()
        return self.acc.check_trigger()

    def requeue(self, step: int) -> None:
        """After the checkpoint of `step`: say why, and have SLURM run the job again (signals.requeue)."""
        signals.requeue(self.acc, step)

    # -- non-finite steps -------------------------------------------------------------------

    def finite(self, params: list[torch.nn.Parameter], step: int, phase: str = "") -> bool:
        """Are these (already all-reduced) gradients finite? Counts skips; raises after too many in a
        row within one phase."""
        limit = self.cfg.train.max_nonfinite
        grads = [p.grad for p in params if p.grad is not None]
        if limit <= 0 or not grads:
            return True
        # One fused norm over all gradients (torch's foreach kernels) instead of an isfinite per tensor;
        # a norm that overflows fp32 (gradients ~1e19) also counts as non-finite, which it is in effect.
        if any(g.dtype in (torch.float16, torch.bfloat16) for g in grads):  # their norm could overflow
            ok = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        else:
            ok = bool(torch.nn.utils.get_total_norm(grads).isfinite())
        return self.record(ok, step, phase)

    def scaler_stepped(self, skipped: bool, step: int, phase: str = "") -> bool:
        """fp16: the GradScaler took or skipped the step (and lowered its scale). A skip while the scale is
        still >= 1 is the scaler finding its level; below 1 the gradients are non-finite unscaled and
        count toward the stop. Returns whether the step was taken."""
        self.record(not skipped or self.acc.scaler.get_scale() >= 1.0, step, phase)
        return not skipped

    def record(self, ok: bool, step: int, phase: str = "") -> bool:
        """Count a step whose gradients were (not) finite, however that was found (here, or by fp16's
        GradScaler); raise after train.max_nonfinite in a row within one phase."""
        limit = self.cfg.train.max_nonfinite
        if limit <= 0:
            return ok
        self.nonfinite_in_a_row[phase] = 0 if ok else self.nonfinite_in_a_row.get(phase, 0) + 1
        if self.nonfinite_in_a_row[phase] >= limit:
            latest = self.run.dir / "checkpoints" / "latest"
            last = latest.resolve().name if latest.exists() else "none yet"
            raise TrainingError(f"{limit} {phase} steps in a row had non-finite gradients (at step {step}); "
                                f"stopping. Last good checkpoint: {last} in {self.run.dir / 'checkpoints'}. "
                                f"Lower the learning rate or check the data, then --resume auto")
        return ok
