"""What both training loops share: the Accelerator, the run dir, metrics, checkpoints, resume.

Run dir contract (DESIGN.md): config.yaml, metrics.jsonl, samples/step_<N>.png,
checkpoints/step_<N>/ + checkpoints/latest, eval/step_<N>.json, report/.
"""
from __future__ import annotations

import json
import netrc
import os
import shutil
import time
import uuid
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs
from accelerate.utils import broadcast_object_list
from safetensors.torch import save_file
from tqdm import tqdm

from distgen import config as config_mod
from distgen import stats
from distgen.checkpoint import info_to_meta
from distgen.errors import ConfigError, TrainingError


class TrainState:
    """Step counter and stream position; saved with every checkpoint via register_for_checkpointing."""

    def __init__(self):
        self.step = 0
        self.batches = 0  # batches this rank has taken from its stream

    def state_dict(self) -> dict:
        return {"step": self.step, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.batches = int(state["step"]), int(state["batches"])


def make_accelerator(cfg, style: str = "single") -> Accelerator:
    # broadcast_buffers=False: D runs forward on reals and fakes before one backward; re-broadcasting
    # BatchNorm buffers in place between them breaks autograd under DDP. Parameters stay in sync.
    ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
    # A dead peer fails every collective after this long instead of hanging the job forever.
    pg = InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.run.collective_timeout))
    # step_scheduler_with_optimizer=False: a scheduler.step() is one step, whatever the process count.
    acc = Accelerator(kwargs_handlers=[ddp, pg], log_with="wandb" if cfg.log.wandb.enabled else None,
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


def _has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "latest").exists()


def resolve_run_dir(cfg, resume: str | None, accelerator: Accelerator) -> tuple[Path, Path | None]:
    """Decide (on the main process, shared with all) the run dir and the checkpoint to resume from."""
    choice = [None]
    if accelerator.is_main_process:
        choice[0] = _resolve(cfg, resume)
    broadcast_object_list(choice)
    run_dir, ckpt = choice[0]
    return Path(run_dir), (Path(ckpt) if ckpt else None)


def _resolve(cfg, resume):
    base = Path("runs") / re.sub(r"[^A-Za-z0-9._-]+", "_", cfg.recipe or cfg.family).strip("._") or "run"
    run_dir = Path(cfg.run.dir) if cfg.run.dir else None
    if resume not in (None, "auto"):
        ckpt = Path(resume)
        if ckpt.is_dir() and (ckpt / "checkpoints").is_dir():  # a run dir: take its latest
            ckpt = ckpt / "checkpoints" / "latest"
        if not (ckpt / "meta.json").is_file():
            raise ConfigError(f"--resume '{resume}' is not a checkpoint (no meta.json); pass a run dir, "
                              f"RUN/checkpoints/step_<N> or --resume auto")
        ckpt = ckpt.resolve()
        return str(run_dir or ckpt.parent.parent), str(ckpt)
    if resume == "auto" and run_dir is None:  # the most recent run of this recipe that has a checkpoint
        runs = sorted(p for p in base.glob("*") if _has_checkpoint(p)) if base.is_dir() else []
        run_dir = runs[-1] if runs else None
    if run_dir is None:
        run_dir = base / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    if _has_checkpoint(run_dir):
        if resume != "auto":
            raise ConfigError(f"run dir '{run_dir}' already has checkpoints; pass --resume auto to continue "
                              f"it, or choose another run.dir=...")
        return str(run_dir), str((run_dir / "checkpoints" / "latest").resolve())
    return str(run_dir), None


def _netrc_has(host: str) -> bool:
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def start_wandb(acc: Accelerator, cfg, run_dir: Path) -> None:
    """W&B through Accelerate's tracker (main process only). Without an API key it runs offline into
    the run dir (sync later with `wandb sync RUN_DIR/wandb/offline-run-*`) and says so once. The run
    id is kept in the run dir, so a resumed run continues the same W&B run."""
    w = cfg.log.wandb
    mode = w.mode
    if mode == "auto":
        online = bool(os.environ.get("WANDB_API_KEY")) or _netrc_has("api.wandb.ai")
        mode = "online" if online and os.environ.get("WANDB_MODE") != "offline" else "offline"
        if mode == "offline":
            tqdm.write(f"W&B: no API key, logging offline into {run_dir}/wandb (upload later with `wandb sync`)")
    id_file = run_dir / "wandb_id.txt"
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
    id_file.write_text(run_id)
    kwargs = {"dir": str(run_dir), "name": run_dir.name, "id": run_id, "resume": "allow", "mode": mode,
              "entity": w.entity or None, "group": w.group or None, "tags": list(w.tags) or None}
    acc.init_trackers(w.project, config=config_mod.to_dict(cfg), init_kwargs={"wandb": kwargs})


class Run:
    """The run dir of one training run, and everything written into it."""

    def __init__(self, cfg, accelerator: Accelerator, resume: str | None):
        self.cfg, self.acc = cfg, accelerator
        self.dir, self.resume_from = resolve_run_dir(cfg, resume, accelerator)
        if accelerator.is_main_process:
            for sub in ("checkpoints", "samples", "eval", "report"):
                (self.dir / sub).mkdir(parents=True, exist_ok=True)
            (self.dir / "config.yaml").write_text(config_mod.dump(cfg))
            if cfg.log.wandb.enabled:
                start_wandb(accelerator, cfg, self.dir)
        accelerator.wait_for_everyone()
        self.bar = None
        self.totals: dict[str, float] = {}
        # name -> object with state_dict/load_state_dict that differs per rank (e.g. CycleGAN's image
        # pools); Accelerate saves registered objects from the main process only, so these are written
        # by every rank as <name>_rank<R>.pt.
        self.per_rank: dict[str, object] = {}
        self._clock = time.perf_counter()

    # -- progress and metrics -----------------------------------------------------------------

    def start(self, step: int) -> None:
        self.bar = tqdm(total=self.cfg.train.steps, initial=step, disable=not self.acc.is_main_process,
                        dynamic_ncols=True, mininterval=1.0, desc=self.cfg.recipe or self.cfg.family)
        self._clock = time.perf_counter()

    def log(self, step: int, images: int, extra: dict | None = None) -> dict:
        """Reduce this interval's stats across ranks (one sync) and write one metrics.jsonl line.

        `images` counts real images this rank consumed since the last log."""
        local, counts = stats.collect(), stats.collect_counts()
        names, count_names = list(local), list(counts)
        values = torch.stack([local[n] for n in names] + [counts[n] for n in count_names] or [torch.zeros(())])
        values = values.to(self.acc.device)
        means = (self.acc.reduce(values[:len(names)], reduction="mean") if names else values[:0]).tolist()
        sums = (self.acc.reduce(values[len(names):], reduction="sum") if count_names else values[:0]).tolist()
        for n, v in zip(count_names, sums):  # counts are running totals over the run
            self.totals[n] = self.totals.get(n, 0.0) + v
        row = {"step": step, **{n: round(v, 6) for n, v in zip(names, means)},
               **{n: self.totals[n] for n in count_names}, **(extra or {})}
        now = time.perf_counter()
        row["img/s"] = round(images * self.acc.num_processes / max(now - self._clock, 1e-9), 2)
        self._clock = now
        if self.acc.is_main_process:
            with open(self.dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k != "step"}, refresh=False)
            if self.cfg.log.wandb.enabled:
                self.acc.log({k: v for k, v in row.items() if k != "step"}, step=step)
        return row

    def write_eval(self, step: int, result: dict) -> None:
        """eval/step_<N>.json, a line in metrics.jsonl (curves), and summary.json (last and best)."""
        if self.acc.is_main_process:
            (self.dir / "eval" / f"step_{step}.json").write_text(json.dumps({"step": step, **result}, indent=1))
            self._summarise(step, result)
            with open(self.dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **{f"eval/{k}": v for k, v in result.items()}}) + "\n")
            if self.cfg.log.wandb.enabled:
                self.acc.log({f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))}, step=step)

    LOWER_IS_BETTER = ("fid", "kid_mean", "mse", "kld")

    def _summarise(self, step: int, result: dict) -> None:
        path = self.dir / "summary.json"
        summary = json.loads(path.read_text()) if path.exists() else {"last": {}, "best": {}}
        for key, value in result.items():
            if not isinstance(value, (int, float)):
                continue
            summary["last"][key] = {"step": step, "value": value}
            best = summary["best"].get(key)
            lower = key in self.LOWER_IS_BETTER
            if best is None or (value < best["value"] if lower else value > best["value"]):
                summary["best"][key] = {"step": step, "value": value}
        path.write_text(json.dumps(summary, indent=1))

    def log_image(self, step: int, name: str, path: Path) -> None:
        """A PNG (a sample grid) to W&B; main process only, like every tracker call."""
        if self.cfg.log.wandb.enabled and self.acc.is_main_process:
            import wandb

            self.acc.log({name: wandb.Image(str(path))}, step=step)

    # -- checkpoints ------------------------------------------------------------------------

    def resume(self) -> bool:
        """Load the checkpoint chosen at start (after prepare and register_for_checkpointing)."""
        if self.resume_from is None:
            return False
        self.acc.load_state(str(self.resume_from))
        for name, obj in self.per_rank.items():
            saved = sorted(self.resume_from.glob(f"{name}_rank*.pt"))
            if saved:  # the same rank's state; resumed on more processes, a saved rank's state modulo
                mine = self.resume_from / f"{name}_rank{self.acc.process_index % len(saved)}.pt"
                obj.load_state_dict(torch.load(mine, map_location="cpu", weights_only=True))
            elif self.acc.is_main_process:
                tqdm.write(f"warning: {self.resume_from} holds no {name}_rank*.pt (an older checkpoint); "
                           f"the {name} state (e.g. CycleGAN's image pools) starts empty")
        if self.acc.is_main_process:
            tqdm.write(f"resumed from {self.resume_from}")
        return True

    def save(self, step: int, meta: dict, nets: dict | None = None) -> Path:
        """accelerate save_state into a temporary dir, rename it to step_<N>, then move `latest`.

        A process killed mid-save leaves only a .tmp dir behind (removed by the next save) and
        `latest` on the previous complete checkpoint; a full disk raises a TrainingError with
        the previous checkpoint untouched."""
        ckdir = self.dir / "checkpoints"
        final, tmp = ckdir / f"step_{step}", ckdir / f".step_{step}.tmp"
        if self.acc.is_main_process:
            for stale in ckdir.glob(".step_*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        self.acc.wait_for_everyone()
        try:
            self.acc.save_state(str(tmp))
            for name, obj in self.per_rank.items():
                torch.save(obj.state_dict(), tmp / f"{name}_rank{self.acc.process_index}.pt")
            if self.acc.state.deepspeed_plugin is not None and nets:
                # DeepSpeed writes engine shards; also write each net's full weights by name for evaluate.py.
                meta = {**meta, "family_nets": {}}
                for name, net in nets.items():
                    weights = self.acc.get_state_dict(net)
                    if self.acc.is_main_process:
                        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / f"{name}.safetensors"))
                    meta["family_nets"][name] = f"{name}.safetensors"
            self.acc.wait_for_everyone()
            if self.acc.is_main_process:
                (tmp / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=1))
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                link = ckdir / ".latest.tmp"
                link.unlink(missing_ok=True)
                link.symlink_to(final.name)
                os.replace(link, ckdir / "latest")
                self._rotate(ckdir)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            latest = ckdir / "latest"
            previous = latest.resolve().name if latest.exists() else "none"
            raise TrainingError(f"could not write checkpoint step_{step} in {ckdir}: {exc.strerror or exc}. "
                                f"The previous checkpoint ({previous}) is intact; free space and rerun with "
                                f"--resume auto") from None
        self.acc.wait_for_everyone()
        return final

    def _rotate(self, ckdir: Path) -> None:
        keep = self.cfg.run.keep_last
        steps = sorted((int(p.name.split("_")[1]), p) for p in ckdir.glob("step_*") if p.name.split("_")[1].isdigit())
        if keep > 0:
            for _, path in steps[:-keep]:
                shutil.rmtree(path)

    def check_ranks(self, nets: dict) -> bool:
        """Gather a fingerprint of every parameter from every rank; write ranks.json; warn on drift.

        DDP keeps replicas identical only if every rank ran the same steps; this catches the silent
        failures (a skipped step on one rank, unsynced parameters) at the end of every run."""
        gen = torch.Generator().manual_seed(0)
        rows = []
        for name in sorted(nets):
            for p in self.acc.unwrap_model(nets[name]).parameters():
                w = torch.rand(p.numel(), generator=gen, dtype=torch.float64).to(p.device)
                flat = p.detach().double().flatten()
                rows.append(torch.stack([flat.sum(), flat.square().sum(), (flat * w).sum()]))
        mine = torch.stack(rows).flatten()
        every_rank = self.acc.gather(mine[None]).cpu()
        drift = float((every_rank - every_rank[0]).abs().max() / every_rank[0].abs().max().clamp_min(1e-12))
        in_sync = drift <= 1e-6
        if self.acc.is_main_process:
            (self.dir / "ranks.json").write_text(json.dumps(
                {"world_size": self.acc.num_processes, "relative_drift": drift, "in_sync": in_sync,
                 "fingerprints": every_rank.tolist()}))
            if not in_sync:
                tqdm.write(f"warning: parameters differ between ranks (relative drift {drift:.3g}); see ranks.json")
        return in_sync

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.acc.wait_for_everyone()
        self.acc.end_training()  # finishes trackers and tears the process group down cleanly
        if self.acc.is_main_process:
            print(f"run dir: {self.dir}", flush=True)


def checkpoint_meta(accelerator: Accelerator, net_names: list[str], custom: list[str], info) -> dict:
    """Which file of an accelerate checkpoint holds which net (in prepare order), so evaluate.py
    can load by name, and what the nets were built for."""
    models = {n: ("model.safetensors" if i == 0 else f"model_{i}.safetensors") for i, n in enumerate(net_names)}
    return {"family_nets": models, "custom": {n: f"custom_checkpoint_{i}.pkl" for i, n in enumerate(custom)},
            "world_size": accelerator.num_processes,
            "data_info": info_to_meta(info) if not isinstance(info, dict) else {k: info_to_meta(v) for k, v in info.items()}}


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def every(step: int, period: int, last: int) -> bool:
    return period > 0 and (step % period == 0 or step == last)
