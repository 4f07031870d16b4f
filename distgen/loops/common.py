"""What both training loops share: the Accelerator and `Run`, the facade over the run dir.

    accelerate launch launch/train.py RECIPE.yaml [key=value ...] [--resume auto|PATH]

Run dir contract: config.yaml, run.json (what ran: command, commit, topology, start/end),
metrics.jsonl, samples/step_<N>.png, checkpoints/step_<N>/ + checkpoints/latest, eval/step_<N>.json,
summary.json, report/, .lock (held while a run is live), abandoned/ (records of a branch left by a
crash or a rollback). The parts live in run_dir.py (choose, lock, run.json), history.py (each step once in
every history) and checkpointer.py (save, load, rotate, roll back, topology and replica checks).
"""
from __future__ import annotations

import atexit
import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs
from accelerate.utils import ProjectConfiguration, broadcast_object_list, gather_object
from tqdm import tqdm

from distgen import config as config_mod
from distgen import plugins, stats
from distgen.loops import signals
from distgen.checkpoint import info_to_meta
from distgen.data.device import to_device  # noqa: F401 (the loops' batch -> device: uint8 images scaled there)
from distgen.errors import ConfigError
from distgen.loops import resume_config
from distgen.loops import run_dir as run_dir_mod
from distgen.loops.checkpointer import Checkpointer
from distgen.loops.history import History, start_trackers
from distgen.recipes import family_class


class TrainState:
    """Step counter and stream position; saved with every checkpoint via register_for_checkpointing."""

    def __init__(self):
        self.step = 0
        self.batches = 0  # batches this rank has taken from its stream

    def state_dict(self) -> dict:
        return {"step": self.step, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.batches = int(state["step"]), int(state["batches"])


def _no_deepspeed_shm_op_on_cpu() -> None:
    """DeepSpeed on a CPU JIT-compiles its shared-memory allreduce op (deepspeed_shm_comm: 30 s to 9 min of
    ninja on 2 busy cores, again for every new checkout path) as its process group starts. Training never
    uses it: the only collective that does is DeepSpeed's `inference_all_reduce` (deepspeed/comm/torch.py);
    the engine's all_reduce and everything distgen reduces go through torch.distributed, and the op's
    shared memory could only join ranks on one host anyway. Under DeepSpeed on a CPU, mark the op
    unavailable in DeepSpeed's own table of compatible ops (as its probe does on a machine that cannot
    build it): build_shm_op() then returns None."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true" or torch.cuda.is_available():
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _deepspeed_cpu_backend() -> dict:
    """DeepSpeed on a CPU: Accelerate knows no distributed backend for the CPU device unless told one, and
    then counts one process (num_processes 1, every rank process_index 0) whatever the world size: every
    rank would act as the main process and collectives would size their buffers for one. Name gloo, the
    backend DeepSpeed's CPU accelerator starts without oneCCL, so Accelerate reads the world from it."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true" or torch.cuda.is_available():
        return {}
    return {"backend": "gloo"}


def make_accelerator(cfg, style: str = "single") -> Accelerator:
    _no_deepspeed_shm_op_on_cpu()  # before Accelerator(): it starts DeepSpeed's process group
    if cfg.train.threads > 0:  # before any kernel runs: the weights depend on it (config.py, train.threads)
        torch.set_num_threads(cfg.train.threads)
    # broadcast_buffers=False: D runs forward on reals and fakes before one backward; re-broadcasting
    # BatchNorm buffers in place between them breaks autograd under DDP. Parameters stay in sync.
    ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
    # A dead peer fails every collective after this long instead of hanging the job forever.
    pg = InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.run.collective_timeout), **_deepspeed_cpu_backend())
    # step_scheduler_with_optimizer=False: a scheduler.step() is one step, whatever the process count.
    # Trackers: W&B and/or TensorBoard (started by Run.start through history.start_trackers). TensorBoard
    # needs a logging_dir now, but the run dir is chosen after the Accelerator exists (Run, on rank 0):
    # "." holds the place and Run.start points it at RUN_DIR/tensorboard before any tracker starts.
    log_with = [name for name, on in (("wandb", cfg.log.wandb.enabled), ("tensorboard", cfg.log.tensorboard)) if on]
    acc = Accelerator(kwargs_handlers=[ddp, pg], log_with=log_with or None,
                      project_config=ProjectConfiguration(logging_dir=".") if cfg.log.tensorboard else None,
                      gradient_accumulation_steps=cfg.train.grad_accum, step_scheduler_with_optimizer=False)
    plugin = acc.state.deepspeed_plugin
    if plugin is not None:
        if style == "adversarial":
            raise ConfigError(f"DeepSpeed is not supported for the two-network family '{cfg.family}': a DeepSpeed "
                              f"engine owns one model and one optimizer, and a GAN steps two in alternation. "
                              f"Launch without --use_deepspeed (DDP, with --mixed_precision for memory), or use "
                              f"DeepSpeed with the single-objective families (vae, dann, classifier)")
        # We feed batches ourselves (no prepared DataLoader), so tell DeepSpeed the micro-batch size.
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = cfg.train.batch_size
        # A run means the same under DDP and DeepSpeed: accumulation is train.grad_accum, and no
        # clipping (Accelerate turns an unset "auto" gradient_clipping into 1.0 at prepare).
        ds = plugin.deepspeed_config
        pinned = ds.get("gradient_accumulation_steps", "auto")
        if pinned not in ("auto", cfg.train.grad_accum) or acc.gradient_accumulation_steps != cfg.train.grad_accum:
            raise ConfigError(f"the DeepSpeed config (or accelerate launch --gradient_accumulation_steps) sets "
                              f"gradient_accumulation_steps={pinned if pinned != 'auto' else acc.gradient_accumulation_steps}"
                              f" but train.grad_accum={cfg.train.grad_accum}; remove it there and set train.grad_accum")
        ds["gradient_accumulation_steps"] = cfg.train.grad_accum
        if ds.get("gradient_clipping", "auto") == "auto":
            ds["gradient_clipping"] = 0.0
        elif ds["gradient_clipping"]:
            acc.print(f"note: the DeepSpeed config clips gradients at norm {ds['gradient_clipping']}; "
                      f"the same recipe under DDP does not clip")
        # DeepSpeed derives train_batch_size = micro-batch x accumulation x its world size; a value
        # filled in here from Accelerate's process count can disagree (on CPU Accelerate counts 1)
        plugin.deepspeed_config.pop("train_batch_size", None)
        if acc.mixed_precision in ("bf16", "fp16"):
            # DeepSpeed casts parameters to bf16/fp16 but keeps buffers fp32 unless told otherwise, and
            # BatchNorm refuses half weights with fp32 running statistics: cast the buffers too (a
            # deepspeed config of your own may say otherwise). The price: running statistics rounded
            # to bf16/fp16 (a few percent), which the fp32 evaluation copies inherit.
            plugin.deepspeed_config.setdefault("data_types", {}).setdefault("buffer_dtype", acc.mixed_precision)
    return acc


class Run:
    """The run of one training: a facade over its run dir (distgen/loops/run_dir.py), its history
    (distgen/loops/history.py) and its checkpoints (distgen/loops/checkpointer.py).

    Order in the loops: Run(...) (choose and lock the run dir) -> resume() -> start(step) (write config.yaml
    and run.json, rewind the histories to `step`, move an abandoned branch aside) -> log/write_eval/
    log_image/save per step -> check_ranks -> finish()."""

    def __init__(self, cfg, accelerator: Accelerator, resume: str | None):
        self.cfg, self.acc = cfg, accelerator
        self.lock = self.record = None
        self._created: Path | None = None  # what this start created, removed if it never trains
        self._started = self._finished = False
        choice: list = [None]
        if accelerator.is_main_process:
            choice[0] = self._claim(resume)
        broadcast_object_list(choice)  # the choice, or the reason to stop, reaches every rank
        if "error" in choice[0]:
            raise ConfigError(choice[0]["error"])
        self.dir = Path(choice[0]["dir"])
        self.resume_from = Path(choice[0]["ckpt"]) if choice[0]["ckpt"] else None
        self.changed: list[str] = choice[0]["changed"]  # config keys this resume changes (resume_config.py)
        self.bar = None
        self.totals: dict[str, float] = {}
        self.step = 0
        # name -> object with state_dict/load_state_dict that differs per rank (e.g. CycleGAN's image
        # pools); Accelerate saves registered objects from the main process only, so these are written
        # by every rank as <name>_rank<R>.pt.
        self.per_rank: dict[str, object] = {}
        self.history = History(self.dir, cfg, accelerator)
        self.checkpoints = Checkpointer(self.dir, cfg, accelerator, self.per_rank)
        self._clock = time.perf_counter()

    def _claim(self, resume) -> dict:
        """Main process: choose the run dir and checkpoint, and lock the dir (a dict to broadcast)."""
        try:
            run_dir, ckpt = run_dir_mod.resolve(self.cfg, resume)
            changed = resume_config.check(self.cfg, ckpt) if ckpt else []  # another family: refused here
            created = run_dir  # the outermost folder this start creates (runs/<recipe>/ too, the first time)
            while not created.parent.exists() and created.parent != created:
                created = created.parent
            self._created = created if not run_dir.exists() else None
            run_dir.mkdir(parents=True, exist_ok=True)
            try:
                self.lock = run_dir_mod.RunLock(run_dir)
            except ConfigError:
                if self._created:
                    run_dir_mod.discard(self._created)
                raise
        except (ConfigError, OSError) as exc:  # every rank stops with the same message, none waits forever
            return {"error": str(exc)}
        atexit.register(self._at_exit)
        return {"dir": str(run_dir), "ckpt": str(ckpt) if ckpt else None, "changed": changed}

    def _at_exit(self) -> None:
        """A start that failed before training leaves no run dir it created; a failed run says so in run.json."""
        if self._finished:
            return
        if not self._started and self._created:
            if self.lock is not None:
                self.lock.release()
            run_dir_mod.discard(self._created)
        elif self._started and self.record is not None:
            why = "; ".join(run_dir_mod._failure) or "the process exited with an error"
            try:
                self.record.end(self.step, why, failed=True)
            except OSError:  # e.g. the full disk that stopped the run; the error was printed already
                pass

    # -- progress and metrics -----------------------------------------------------------------

    def start(self, step: int) -> None:
        """Training begins at `step`: write config.yaml and run.json, make every history hold steps <= `step`
        only (moving a crashed or abandoned branch aside, said once), start W&B / TensorBoard and the
        progress bar."""
        self.step = step
        if self.acc.is_main_process:
            for sub in ("checkpoints", "samples", "eval", "report"):
                (self.dir / sub).mkdir(parents=True, exist_ok=True)
            (self.dir / "config.yaml").write_text(config_mod.dump(self.cfg))
            self.record = run_dir_mod.RunRecord(self.dir, self.checkpoints.topology, self.cfg.train.steps,
                                                plugins.source(family_class(self.cfg.family)))
            self.record.start(step, self.resume_from)
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            aside = self.dir / "abandoned" / f"{stamp}-after-step_{step}"
            moved = self.checkpoints.roll_back(self.resume_from, aside) if self.resume_from else []
            moved += self.history.rewind(step, aside)
            if moved:
                tqdm.write(f"resuming at step {step}: moved the records of later steps (a crashed or abandoned "
                           f"branch) to {aside}: {', '.join(moved)}")
            if self.cfg.log.wandb.enabled or self.cfg.log.tensorboard:
                start_trackers(self.acc, self.cfg, self.dir, step)
            self._started = True
        self.acc.wait_for_everyone()
        self.bar = tqdm(total=self.cfg.train.steps, initial=step, disable=not self.acc.is_main_process,
                        dynamic_ncols=True, mininterval=1.0, desc=self.cfg.recipe or self.cfg.family)
        self._clock = time.perf_counter()

    def log(self, step: int, images: int, extra: dict | None = None) -> dict:
        """Reduce this interval's stats across ranks (one sync) and write one metrics.jsonl line.

        `images` counts real images this rank consumed since the last log."""
        # everything on the accelerator's device; names reported on some ranks only are safe (distgen/stats.py)
        means, sums = stats.reduce(self.acc.device, lambda t: self.acc.reduce(t, reduction="sum"),
                                   lambda obj: gather_object([obj]))
        for n, v in sums.items():  # counts are running totals over the run
            self.totals[n] = self.totals.get(n, 0.0) + v
        row = {"step": step, **{n: round(v, 6) for n, v in means.items()},
               **{n: self.totals[n] for n in sums}, **(extra or {})}
        if self.acc.device.type == "cuda":  # deliberate host sync, once per log: the clock reads work done,
            torch.cuda.current_stream(self.acc.device).synchronize()  # not work queued (replays queue far ahead)
        now = time.perf_counter()
        row["img/s"] = round(images * self.acc.num_processes / max(now - self._clock, 1e-9), 2)
        self._clock = now
        self.step = step
        if self.acc.is_main_process:
            self.history.log(row)
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"}, refresh=False)
        return row

    def write_eval(self, step: int, result: dict) -> None:
        """eval/step_<N>.json, a line in metrics.jsonl (curves), and summary.json (last and best)."""
        if self.acc.is_main_process:
            self.history.write_eval(step, result)

    def log_image(self, step: int, name: str, path: Path) -> None:
        """A PNG (a sample grid) to W&B and TensorBoard; main process only, like every tracker call."""
        if self.acc.is_main_process:
            self.history.log_image(step, name, path)

    # -- checkpoints ------------------------------------------------------------------------

    def resume(self) -> bool:
        """Load the checkpoint chosen at start (after prepare and register_for_checkpointing)."""
        if self.resume_from is None:
            return False
        try:
            self.checkpoints.load(self.resume_from)
        except RuntimeError as exc:
            # load_state_dict's "Error(s) in loading state_dict" (size mismatch, missing or unexpected keys):
            # only the built nets know their shapes, so the load itself is the architecture check
            if "state_dict" not in str(exc):
                raise
            raise resume_config.architecture_error(self.resume_from, self.changed) from None
        if self.acc.is_main_process:
            tqdm.write(f"resumed from {self.resume_from}")
            if self.changed:
                tqdm.write(f"resumed with {len(self.changed)} changed config key(s) (config.yaml now holds the new "
                           f"values):")
                for change in self.changed:
                    tqdm.write(f"  {change}")
        return True

    def save(self, step: int, meta: dict, nets: dict | None = None) -> Path:
        """Check the replicas agree (when given the nets), then write checkpoints/step_<N> and move `latest`.

        A process killed mid-save leaves only a .tmp dir behind (removed by the next save) and
        `latest` on the previous complete checkpoint; a full disk raises a TrainingError with
        the previous checkpoint untouched."""
        if nets:
            self.checkpoints.check_ranks(nets, step)
        self.step = step
        return self.checkpoints.save(step, meta, nets)

    def check_ranks(self, nets: dict) -> bool:
        """Gather a fingerprint of every parameter from every rank; write ranks.json; warn naming drift."""
        return self.checkpoints.check_ranks(nets, self.step)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.acc.wait_for_everyone()
        self.acc.end_training()  # finishes trackers and tears the process group down cleanly
        signals.note_end(self.acc, self.step, self.cfg.train.steps)
        if self.acc.is_main_process:
            if self.record is not None:
                self.record.end(self.step, self._why_early())
            if self.lock is not None:
                self.lock.release()
            print(f"run dir: {self.dir}", flush=True)
        self._finished = True

    def _why_early(self) -> str | None:
        got = sorted(set(signals.received()))
        if got:
            names = ", ".join(signal.Signals(s).name for s in got)
            return f"{names} received: checkpoint saved" + (" and the SLURM job requeued"
                                                             if os.environ.get("SLURM_JOB_ID") else "")
        return None


def checkpoint_meta(accelerator: Accelerator, net_names: list[str], custom: list[str], info) -> dict:
    """Which file of an accelerate checkpoint holds which net (in prepare order), so evaluate.py
    can load by name, and what the nets were built for."""
    models = {n: f"{n}.safetensors" for n in net_names}  # written by name (distgen/loops/checkpointer.py)
    return {"family_nets": models, "custom": {n: f"custom_checkpoint_{i}.pkl" for i, n in enumerate(custom)},
            "world_size": accelerator.num_processes,
            "data_info": info_to_meta(info) if not isinstance(info, dict) else {k: info_to_meta(v) for k, v in info.items()}}


def every(step: int, period: int, last: int) -> bool:
    return period > 0 and (step % period == 0 or step == last)
