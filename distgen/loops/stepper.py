"""One optimizer step of a group of nets from a family's loss terms, shared by both training loops.

    stepper = Stepper(acc, cfg, guard, nets, {"D": Group(("D",), [opt_d]), "G": Group(("G",), [opt_g])})
    for _ in range(cfg.train.grad_accum):          # micro-batches of one optimizer step
        with stepper.micro_batch("D"):
            with stepper.autocast():               # one autocast region per phase's micro-batch
                terms = family.loss("D", nets, batch)
            stepper.step(terms, "D")
    stepper.end_iteration()                        # once per training step, after every phase

What `micro_batch`, `step` and `end_iteration` do, in order, for every family:
  - accumulation: train.grad_accum = k micro-batches per optimizer step (Accelerate's `accumulate`:
    gradients are all-reduced and the optimizers step on the k-th only; the loss is divided by k); with
    k = 1 no Accelerate context is entered per micro-batch but `no_sync` with several processes, and the
    optimizers are stepped without Accelerate's wrapper where it only forwards (see `Stepper.__init__`);
  - nets the group does not step run under `no_sync` and backward is limited to the stepped nets'
    parameters (`inputs=`), so a G step computes no weight gradients of D;
  - mixed precision: the loop opens one autocast per phase's micro-batch (`autocast`), around the
    family's loss only; Accelerate's autocast around every forward is taken off at preparation
    (distgen/loops/nets.py), so each net's weights are cast once per phase, not once per call;
  - fp16: the GradScaler's scale is the family's `loss_scale()` during the micro-batch (the gradient
    penalty's own autograd.grad needs it; distgen/families/base.py), and Accelerate's optimizer steps
    through the scaler, which skips a step with inf/NaN and lowers its scale;
  - the guard: whether the gradients are finite is found on the device in one op (the GradScaler's
    fused check, `guard.nonfinite`), into a preallocated flag; a non-finite step is skipped on the
    device (the fused optimizers' `found_inf`) and, at `end_iteration`, the flags of every phase are
    recorded in the guard (two vector ops: the run in a row that stops training, read only at log and
    checkpoint boundaries: distgen/loops/guard.py) and reported as `nonfinite_skipped`. fp16: a skip
    while the scale is >= 1 is the scaler finding its level; below 1 it counts toward the stop;
  - DeepSpeed: the engine steps inside backward and skips a non-finite step itself; the stepper only
    counts its skips for the guard (`_count_engine_skip`);
  - the terms are reported to distgen.stats (remembered, not reduced), and `end_iteration` adds every
    statistic of the step into device accumulators with one foreach op; then the flags are cleared.

Why it is written this tightly: the reports' nets are too small to fill a GPU, which then waits on the
host, and every dispatched op costs about one launch whatever it computes. A D+G iteration of the
harness dispatches 1.04x the aten ops of a hand-written loop on the same nets, fp32 and bf16
(benchmarks/train_overhead.py, tests/test_lean_step.py). `capture_mode` (train.cuda_graph,
distgen/loops/capture.py) makes each step record and accumulate its own flag and statistics, so one
captured CUDA graph per phase holds everything the step does.

No host sync per step, except the deliberate ones marked below (optimizers without a fused kernel,
e.g. RMSprop or train.fused_optim=false, must know on the host whether to step).
"""
from __future__ import annotations

import functools
import operator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from accelerate.utils import DistributedType

from distgen import stats
from distgen.families.base import loss_scaled
from distgen.loops.guard import nonfinite


@dataclass
class Group:
    """What one phase steps: these nets (by name) with these (prepared) optimizers."""
    nets: tuple[str, ...]
    optimizers: list
    params: list = field(default_factory=list)  # filled by the Stepper: the trainable parameters of `nets`


class Stepper:
    def __init__(self, acc, cfg, guard, nets: dict, groups: dict[str, Group], check: bool = True):
        """`check`: find and skip non-finite steps (under DeepSpeed the engine does, see `_count_engine_skip`)."""
        self.acc, self.cfg, self.guard, self.nets, self.groups = acc, cfg, guard, nets, groups
        self.engine_steps = acc.state.deepspeed_plugin is not None  # the engine steps inside acc.backward
        self.check = check and cfg.train.max_nonfinite > 0 and not self.engine_steps
        for group in groups.values():
            group.params = [p for n in group.nets for p in nets[n].parameters() if p.requires_grad]
        # backward limited to the stepped parameters only where some net is not stepped (inputs= is a
        # no-op otherwise, and DeepSpeed's engine takes no inputs)
        self.limit_backward = {name: set(g.nets) != set(nets) for name, g in groups.items()}
        self.deepspeed = acc.state.deepspeed_plugin is not None
        # Accelerate's per-micro-batch contexts, entered only where they do something: `accumulate` with
        # grad_accum > 1 (with k = 1 it only sets sync_gradients, which stays True) and under DeepSpeed;
        # `no_sync` with several processes (one process: a nullcontext). Each costs host time per
        # micro-batch, and a GPU that waits on the host pays it in throughput.
        self.accumulating = cfg.train.grad_accum > 1 or self.deepspeed
        self.distributed = acc.use_distributed
        # The optimizers stepped and zeroed directly, not through Accelerate's AcceleratedOptimizer, where
        # that wrapper only forwards the call: no GradScaler, no DeepSpeed (and no XLA, which distgen does
        # not run). Its step() looks for the `lomo_optim` package on sys.path twice per call and its
        # zero_grad() builds an inspect.signature, about 0.3 ms of host time per step on a CPU, more than
        # a small net's optimizer step itself. Stepping only on the last micro-batch (what the wrapper
        # checks through sync_gradients) stays here, in `step`.
        direct = acc.scaler is None and not self.deepspeed and acc.distributed_type != DistributedType.XLA
        self.plain = {name: [getattr(o, "optimizer", o) if direct else o for o in g.optimizers]
                      for name, g in groups.items()}
        self.phases = list(groups)
        device = acc.device
        if self.check and hasattr(guard, "track"):
            guard.track(self.phases, device)
        # The non-finite flags of one iteration: row j, column i is the j-th optimizer step of phase i.
        # Zeroed once per iteration (end_iteration), grown only in the first iteration that needs a row.
        self.found = torch.zeros(1, len(self.phases), device=device)
        self._views: dict = {}  # views of `found`, made once (taking a view is a dispatched op too)
        self._rounds: dict[str, int] = {}  # optimizer steps each phase took this iteration
        self._checked: list[tuple[int, int]] = []  # (row, column) of flags end_iteration records
        # train.cuda_graph (distgen/loops/capture.py): every step zeroes, records and accumulates its own
        # flag and statistics, so that one captured graph per phase holds all of it
        self.capture_mode = False
        self.capture_record: list = []  # what the steps flushed in capture mode (a graph recounts it per replay)

    def _scale(self):
        scaler = self.acc.scaler
        if scaler is None:
            return 1.0
        # The scale as a device tensor, no host sync (get_scale() would read it); before the first step
        # the scaler has not made it yet and get_scale() returns the initial float.
        scale = scaler._get_scale_async()
        return scale if scale is not None else scaler.get_scale()

    @contextmanager
    def micro_batch(self, phase: str = ""):
        """Around one micro-batch's forward and `step`: accumulation, no_sync of the nets this phase does
        not step, and the loss scale."""
        stepped = self.groups[phase].nets
        with ExitStack() as stack:
            if self.accumulating:
                stack.enter_context(self.acc.accumulate(*[self.nets[n] for n in stepped]))
            if self.distributed:
                for name, net in self.nets.items():
                    if name not in stepped:
                        stack.enter_context(self.acc.no_sync(net))
            if self.acc.scaler is not None:
                stack.enter_context(loss_scaled(self._scale()))
            yield

    def autocast(self):
        """Mixed precision around one micro-batch's loss (the loop opens it): one autocast region per phase,
        so each net's weights are cast once per phase, not once per call (Accelerate's per-forward autocast
        is taken off the nets at preparation: distgen/loops/nets.py). Backward runs outside it."""
        return self.acc.autocast() if self.acc.native_amp else nullcontext()

    def backward(self, loss: torch.Tensor, phase: str) -> None:
        """loss.backward() into the phase's parameters. Not Accelerate's backward, which divides by the
        accumulation steps even when there is one (two ops forward and backward per phase for nothing);
        DeepSpeed's engine still goes through it (it steps inside backward)."""
        if self.deepspeed:
            self.acc.backward(loss)
            return
        if self.cfg.train.grad_accum > 1:
            loss = loss / self.cfg.train.grad_accum
        if self.acc.scaler is not None:
            loss = self.acc.scaler.scale(loss)
        loss.backward(inputs=self.groups[phase].params if self.limit_backward[phase] else None)

    def step(self, terms: dict[str, torch.Tensor], phase: str = "") -> None:
        """Backward of the summed terms; on the last micro-batch of the step, step (or skip) and zero_grad."""
        group = self.groups[phase]
        # a plain sum (n - 1 adds), not stack().sum(): no extra op forward or backward
        self.backward(functools.reduce(operator.add, terms.values()), phase)
        for name, value in terms.items():
            stats.report(name, value)  # remembered, added on the device at end_iteration
        if self.accumulating and not self.acc.sync_gradients:  # the optimizers step on the last micro-batch
            return
        if self.engine_steps:
            self._count_engine_skip(phase)
            return
        grads = [p.grad for p in group.params if p.grad is not None] if self.check else []
        scaler = self.acc.scaler
        optimizers = self.plain[phase]
        if not grads:  # the check is off (train.max_nonfinite=0), or no parameter has a gradient
            for opt in optimizers:
                opt.step()
        elif self.capture_mode:
            bad = self._view(0, self.phases.index(phase))
            bad.zero_()
            nonfinite(grads, bad)
            for opt in optimizers:
                _step_unless(opt, bad)
            self.guard.record(bad, phase)
            stats.report("nonfinite_skipped", bad)
            self.capture_record += stats.flush()
        else:
            bad = self._flag(phase)
            nonfinite(grads, bad)
            if scaler is not None:
                # fp16: the scaled gradients are non-finite exactly when the scaler will skip this step.
                counts = bad * (self._scale() < 1.0)  # before the scaler lowers it: >= 1 is finding its level
                for opt in group.optimizers:
                    opt.step()  # GradScaler.step: a fused optimizer skips on the device (torch syncs for others)
                for name in group.nets:
                    stats.report(f"{name}/skipped", bad)
                stats.report("nonfinite_skipped", bad)
                self.guard.record(counts, phase)
            else:
                for opt in optimizers:
                    _step_unless(opt, bad)
                self._checked.append((self._rounds[phase] - 1, self.phases.index(phase)))
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)

    def _flag(self, phase: str) -> torch.Tensor:
        """This optimizer step's slot in `found` (a zero, one element, a view)."""
        j = self._rounds.get(phase, 0)
        self._rounds[phase] = j + 1
        if j >= len(self.found):  # a phase repeated more often than so far (first iterations only)
            self.found = torch.cat([self.found, torch.zeros(j + 1 - len(self.found), len(self.phases),
                                                            device=self.found.device)])
            self._views.clear()
        return self._view(j, self.phases.index(phase))

    def _view(self, j: int, i: int | None = None) -> torch.Tensor:
        """found[j, i] (0-d), or the row found[j] when i is None; cached."""
        view = self._views.get((j, i))
        if view is None:
            view = self._views[(j, i)] = self.found[j] if i is None else self.found[j, i]
        return view

    def end_iteration(self) -> None:
        """After every phase of one iteration (the loops call it once per step): record the non-finite
        flags in the guard and the statistics, add everything reported into the device accumulators
        (distgen/stats.py), and clear the flags. With D and G stepping once each: five ops in all."""
        if self._checked:
            rows = sorted({j for j, _ in self._checked})
            for j in rows:
                cols = sorted(i for jj, i in self._checked if jj == j)
                if cols == list(range(len(self.phases))):  # every phase stepped: one vector op each
                    self.guard.record_round(self._view(j), self.phases)
                    stats.report("nonfinite_skipped", self._view(j))
                else:
                    for i in cols:
                        self.guard.record(self._view(j, i), self.phases[i])
                        stats.report("nonfinite_skipped", self._view(j, i))
        stats.flush()
        if self._rounds and self.check:
            self.found.zero_()
        self._checked.clear()
        self._rounds.clear()

    def _count_engine_skip(self, phase: str) -> None:
        """DeepSpeed: the engine has stepped inside `acc.backward` (and zeroed the gradients). Its ZeRO 1-2
        optimizer skips a step whose reduced gradients hold inf/NaN by itself: in fp32 and bf16 its
        gradient norm or overflow check, in fp16 its loss scaler. Count the skip and keep the guard's row
        from the engine's answer. That check is DeepSpeed's host sync (its optimizer decides on the host
        whether to step; it has no device-side skip); reading its answer, a Python bool, adds none here.
        fp16: a skip while the scaler can still lower its scale is the scaler finding its level, not
        counted toward the stop (as with the GradScaler)."""
        engine = self.acc.deepspeed_engine_wrapped.engine
        skipped = not engine.was_step_applied()
        bad = torch.tensor(float(skipped), device=self.acc.device)
        stats.report("nonfinite_skipped", bad)
        scaler = getattr(engine.optimizer, "loss_scaler", None)
        finding_level = engine.fp16_enabled() and getattr(scaler, "cur_scale", 0) > getattr(scaler, "min_scale", 0)
        self.guard.record(bad * (not finding_level), phase)


def _step_unless(opt, bad: torch.Tensor) -> None:
    """Step `opt` (a torch optimizer, or Accelerate's wrapper of one) unless `bad` is 1, deciding on the
    device where the optimizer can: torch's fused optimizers skip the whole update when their `found_inf` is 1 (the
    GradScaler's own mechanism, also used here without loss scaling), leaving weights and moments as
    they were."""
    inner = getattr(opt, "optimizer", opt)
    if getattr(inner, "_step_supports_amp_scaling", False):  # fused Adam/AdamW/SGD
        inner.found_inf = bad
        try:
            opt.step()
        finally:
            del inner.found_inf
    elif not bool(bad):  # deliberate host sync: this optimizer has no device-side skip
        opt.step()
