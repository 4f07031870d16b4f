"""A run's history: metrics.jsonl, eval/*.json, summary.json, samples/, W&B and TensorBoard, each step once.

    run = Run(cfg, accelerator, resume); run.start(step); run.log(...); run.write_eval(...)   (the loops)

Written by the main process only. The guarantee: after any start (fresh, `--resume auto` after a
crash, or a rollback to an older checkpoint) every history holds each step once, from the branch
that survived. `rewind(step)` runs before the first new row:
  - metrics.jsonl keeps its rows with step <= the resumed step (a last line cut by a kill is dropped),
  - eval/ and samples/ files of later steps (step_<N>.json, <kind>_step_<N>.png, step_<N>.png) move aside,
  - summary.json (last and best of every eval metric) is recomputed from the eval files that remain,
  - W&B continues the same run rewound to that step (`wandb.init(resume_from="<id>?_step=<N>")`,
    which wandb records offline too and applies when the offline run is synced; see start_trackers),
  - TensorBoard hides the later steps' events (a new event file with purge_step; see start_trackers).
What moves aside goes to RUN_DIR/abandoned/<time>-after-step_<N>/ (rows to its metrics.jsonl), so nothing
is deleted. Rows are appended with one write and flushed, so a kill leaves at most one cut last line.
"""
from __future__ import annotations

import glob
import json
import netrc
import os
import re
import shutil
import uuid
from pathlib import Path

from tqdm import tqdm

from distgen import config as config_mod

STEP_FILE = re.compile(r"(?:.+_)?step_(\d+)\.(?:json|png)")
LOWER_IS_BETTER = ("fid", "kid_mean", "mse", "kld", "rmse_AB")


def read_rows(path: Path) -> tuple[list[dict], bool]:
    """(rows of a metrics.jsonl up to its last complete line, whether a cut last line was dropped)."""
    if not path.is_file():
        return [], False
    text = path.read_text()
    lines = text.split("\n")
    cut = bool(lines[-1].strip())  # no final newline: the writer was killed mid-line
    rows = []
    for line in lines[:-1]:
        if line.strip():
            rows.append(json.loads(line))
    if cut:
        try:
            rows.append(json.loads(lines[-1]))  # complete JSON that only lacks its newline
            cut = False
        except json.JSONDecodeError:
            pass
    return rows, cut


def summarise(evals: list[dict]) -> dict:
    """summary.json: the last and the best value of every numeric eval key, over eval rows in step order."""
    summary: dict = {"last": {}, "best": {}}
    for result in evals:
        step = result["step"]
        for key, value in result.items():
            if key == "step" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            summary["last"][key] = {"step": step, "value": value}
            best = summary["best"].get(key)
            lower = key in LOWER_IS_BETTER
            if best is None or (value < best["value"] if lower else value > best["value"]):
                summary["best"][key] = {"step": step, "value": value}
    return summary


def _netrc_has(host: str) -> bool:
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def offline_sessions(run_dir: Path, run_id: str) -> str:
    """The glob of every offline W&B session of the run: `offline-run-<time>-<id>`, and `...-<id>-<n>` where
    W&B found that folder taken (two sessions started within the same second)."""
    return f"{run_dir}/wandb/offline-run-*-{run_id}*"


def start_trackers(acc, cfg, run_dir: Path, step: int) -> None:
    """W&B and/or TensorBoard through Accelerate's trackers, started together (main process only).

    TensorBoard writes event files into RUN_DIR/tensorboard/<log.wandb.project> (Accelerate's tracker
    names its folder after the project, which the trackers share). A later start opens a new event file
    there with `purge_step` = the resumed step + 1, so TensorBoard hides the events of later steps an
    earlier session wrote: like metrics.jsonl, it shows each step once. The config goes in as text.

    W&B: without an API key it runs offline into the run dir and says so once, with the command that
    uploads it. The run id is kept in the run dir; a later start
    continues that W&B run rewound to its starting step (`resume_from`, W&B's "rewind"), so W&B, too,
    holds each step once. Rewind is a server-side feature in preview: where the server refuses it, the
    run continues with resume="allow" and W&B keeps the old rows of the steps logged again (said once).

    Offline, W&B writes every start into a folder of its own, `wandb/offline-run-<time>-<id>`, the same id
    for every session of the run (a resumed one records its rewind step), and cannot append to an earlier
    one. `wandb sync` given all of them uploads them as one run, in the order they started: so the message
    names them all by one pattern. Syncing only `wandb/latest-run` would upload the last session alone."""
    init: dict = {}
    if cfg.log.tensorboard:
        acc.project_configuration.logging_dir = str(run_dir / "tensorboard")  # make_accelerator left "."
        init["tensorboard"] = {"purge_step": step + 1}
    if not cfg.log.wandb.enabled:
        acc.init_trackers(cfg.log.wandb.project, init_kwargs=init)
        acc.get_tracker("tensorboard").log({"config": f"<pre>{config_mod.dump(cfg)}</pre>"}, step=step)
        return
    w = cfg.log.wandb
    mode = w.mode
    if mode == "auto":
        online = bool(os.environ.get("WANDB_API_KEY")) or _netrc_has("api.wandb.ai")
        mode = "online" if online and os.environ.get("WANDB_MODE") != "offline" else "offline"
    id_file = run_dir / "wandb_id.txt"
    known = id_file.exists()
    run_id = id_file.read_text().strip() if known else uuid.uuid4().hex[:12]
    id_file.write_text(run_id)
    if mode == "offline":
        sessions = len(glob.glob(offline_sessions(run_dir, run_id))) + 1
        tqdm.write(f"W&B: {'no API key, ' if w.mode == 'auto' else ''}logging offline into {run_dir}/wandb; upload "
                   f"later with `wandb sync {offline_sessions(run_dir, run_id)}`"
                   + (f" (all {sessions} sessions of W&B run {run_id} in one command: W&B uploads them in the order "
                      f"they started, each resumed one rewound to its first step)" if sessions > 1 else ""))
    kwargs = {"dir": str(run_dir), "name": run_dir.name, "mode": mode, "entity": w.entity or None,
              "group": w.group or None, "tags": list(w.tags) or None}
    kwargs.update({"resume_from": f"{run_id}?_step={step}"} if known else {"id": run_id, "resume": "allow"})
    try:
        acc.init_trackers(w.project, init_kwargs={**init, "wandb": kwargs})
    except Exception as exc:  # wandb raises its own CommError/UsageError when the server refuses rewind
        if not known:
            raise
        tqdm.write(f"W&B: could not rewind run {run_id} to step {step} ({exc}); continuing it without rewind, "
                   f"so W&B keeps the earlier rows of steps after {step}")
        kwargs.pop("resume_from")
        # init_trackers made every tracker, then started them in log_with's order, W&B first: it failed
        # before TensorBoard's started. Make them again, once each.
        acc.trackers.clear()
        acc.init_trackers(w.project, init_kwargs={**init, "wandb": {**kwargs, "id": run_id, "resume": "allow"}})
    # one config per tracker, in its own form: W&B's nested config, TensorBoard's text
    acc.get_tracker("wandb").store_init_configuration(config_mod.to_dict(cfg))
    if cfg.log.tensorboard:
        acc.get_tracker("tensorboard").log({"config": f"<pre>{config_mod.dump(cfg)}</pre>"}, step=step)


class History:
    """Rows, eval results, summary and tracker calls of one run (call from the main process only)."""

    def __init__(self, run_dir: Path, cfg, acc):
        self.dir, self.cfg, self.acc = run_dir, cfg, acc
        self.metrics = run_dir / "metrics.jsonl"
        self.wandb, self.tensorboard = cfg.log.wandb.enabled, cfg.log.tensorboard
        self.trackers = self.wandb or self.tensorboard

    def rewind(self, step: int, aside: Path) -> list[str]:
        """Move every record of steps after `step` to `aside`; return what moved (for one message)."""
        moved = []
        rows, cut = read_rows(self.metrics)
        keep = [r for r in rows if r.get("step", 0) <= step]
        later = [r for r in rows if r.get("step", 0) > step]
        if later or cut:
            if later:
                aside.mkdir(parents=True, exist_ok=True)
                with open(aside / "metrics.jsonl", "a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in later)
                moved.append(f"{len(later)} metrics.jsonl rows")
            if cut:
                moved.append("a metrics.jsonl line cut by a kill")
            tmp = self.metrics.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
            os.replace(tmp, self.metrics)
        for sub in ("eval", "samples"):
            files = [p for p in (self.dir / sub).glob("*") if (m := STEP_FILE.fullmatch(p.name))
                     and int(m.group(1)) > step]
            if files:
                (aside / sub).mkdir(parents=True, exist_ok=True)
                for path in files:
                    shutil.move(str(path), aside / sub / path.name)
                moved.append(f"{len(files)} {sub}/ files")
        if any("eval/" in m for m in moved) or (self.dir / "summary.json").exists():
            self._write_summary()
        return moved

    def log(self, row: dict) -> None:
        step = row["step"]
        self._append(row)
        if self.trackers:
            self.acc.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def write_eval(self, step: int, result: dict) -> None:
        """eval/step_<N>.json, a line in metrics.jsonl (curves), and summary.json (last and best)."""
        (self.dir / "eval" / f"step_{step}.json").write_text(json.dumps({"step": step, **result}, indent=1))
        self._write_summary()
        self._append({"step": step, **{f"eval/{k}": v for k, v in result.items()}})
        if self.trackers:
            self.acc.log({f"eval/{k}": v for k, v in result.items() if isinstance(v, (int, float))}, step=step)

    def log_image(self, step: int, name: str, path: Path) -> None:
        if self.wandb:
            import wandb

            self.acc.get_tracker("wandb").log({name: wandb.Image(str(path))}, step=step)
        if self.tensorboard:
            import numpy as np
            from PIL import Image

            image = np.asarray(Image.open(path).convert("RGB"))[None]  # one image, NHWC uint8
            self.acc.get_tracker("tensorboard").log_images({name: image}, step=step, dataformats="NHWC")

    def _append(self, row: dict) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _write_summary(self) -> None:
        evals = []
        for path in (self.dir / "eval").glob("step_*.json"):
            if re.fullmatch(r"step_\d+\.json", path.name):
                try:
                    evals.append(json.loads(path.read_text()))
                except json.JSONDecodeError:
                    continue
        evals = sorted((e for e in evals if isinstance(e, dict) and "step" in e), key=lambda e: e["step"])
        path = self.dir / "summary.json"
        if evals or path.exists():
            path.write_text(json.dumps(summarise(evals), indent=1))
