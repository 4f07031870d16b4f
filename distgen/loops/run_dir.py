"""The run dir of one training run: which folder, which checkpoint to resume, who holds it, what ran.

    accelerate launch launch/train.py RECIPE.yaml [run.dir=DIR] [--resume auto|DIR|DIR/checkpoints/step_<N>]

Choosing (main process only; the loops' `Run` shares the choice with every rank):
  - `--resume auto` without run.dir continues the run of this recipe whose last checkpoint is the
    newest by time (`runs/<recipe>/slurm-<id>` and timestamped dirs compared by when they saved, not
    by name); with run.dir it continues that dir, or starts it if it holds no checkpoint yet.
  - `checkpoints/latest` naming a missing checkpoint is an error that lists the ones there, never a
    fresh start over a run that has checkpoints.

Holding: the main process holds an exclusive `flock` on RUN_DIR/.lock for the life of the run. A second
start on the same dir (also `--resume auto`) is refused at once with the holder's pid and host. The
kernel drops the lock when the holder dies, so a lock left by a killed run (kill -9, a node reboot, a
SLURM requeue) never blocks. flock rather than a pid file because a pid file cannot tell a dead holder
from a live one on another host. Where the filesystem has no flock (Lustre mounted without -o flock:
ENOSYS; some NFS: ENOLCK, EOPNOTSUPP), RUN_DIR/.lock.heartbeat instead: created exclusively, holding pid,
host and a heartbeat a thread refreshes every 30 s; a heartbeat older than 300 s (or a pid gone on the
same host) is a dead run's lock, taken over with a message that names it.

Recording: RUN_DIR/run.json holds the facts a config.yaml cannot: the command line, the distgen git
commit, world size, machines, data.num_workers, mixed precision, host, the family's module and its file
(a plug-in family's is found again from them), when it started and ended, and whether it stopped early
and why. Each resume appends the previous session to "sessions".

A start that fails before training (bad data path, missing Inception weights, a refused lock) removes
the run dir it created, so no empty run dirs pile up.
"""
from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from distgen.errors import ConfigError

STEP_DIR = re.compile(r"step_(\d+)")
_failure: list[str] = []  # why this process is stopping with an error (set by launch/train.py)


def note_failure(message: str) -> None:
    """Record why training stopped with an error, for run.json (launch/train.py calls it)."""
    _failure.append(message)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- choosing the run dir and the checkpoint ------------------------------------------------------

def checkpoint_steps(ckdir: Path) -> dict[int, Path]:
    """step -> checkpoints/step_<N> folder, complete ones only (a meta.json is written last)."""
    out = {}
    for path in ckdir.glob("step_*") if ckdir.is_dir() else []:
        match = STEP_DIR.fullmatch(path.name)
        if match and (path / "meta.json").is_file():
            out[int(match.group(1))] = path
    return dict(sorted(out.items()))


def has_checkpoint(run_dir: Path) -> bool:
    latest = run_dir / "checkpoints" / "latest"
    return latest.is_symlink() or latest.exists() or bool(checkpoint_steps(run_dir / "checkpoints"))


def latest_checkpoint(run_dir: Path) -> Path:
    """The complete checkpoint `latest` names; a dangling or missing `latest` is an error, never "none"."""
    ckdir = run_dir / "checkpoints"
    latest = ckdir / "latest"
    if (latest / "meta.json").is_file():
        return latest.resolve()
    there = ", ".join(p.name for p in checkpoint_steps(ckdir).values()) or "none"
    named = f"names {os.readlink(latest)}, which is missing or incomplete" if latest.is_symlink() else "is missing"
    newest = list(checkpoint_steps(ckdir).values())[-1:] or [ckdir / "step_<N>"]
    raise ConfigError(f"{latest} {named} (checkpoints there: {there}); refusing to start this run again from "
                      f"step 0. Resume one explicitly: --resume {newest[0]}")


def newest_run(base: Path) -> Path | None:
    """The run dir under `base` whose checkpoint was written last (by time: slurm-<id> and timestamped
    names do not sort by age)."""
    def saved_at(run_dir: Path) -> float:
        latest = run_dir / "checkpoints" / "latest"
        times = [p.stat().st_mtime for p in checkpoint_steps(run_dir / "checkpoints").values()]
        if latest.is_symlink():
            times.append(latest.lstat().st_mtime)
        return max(times, default=0.0)

    runs = [p for p in base.glob("*") if p.is_dir() and has_checkpoint(p)] if base.is_dir() else []
    return max(runs, key=saved_at) if runs else None


def resolve(cfg, resume: str | None) -> tuple[Path, Path | None]:
    """(run dir, checkpoint to resume from or None) for this start (main process)."""
    base = Path("runs") / (re.sub(r"[^A-Za-z0-9._-]+", "_", cfg.recipe or cfg.family).strip("._") or "run")
    run_dir = Path(cfg.run.dir) if cfg.run.dir else None
    if resume not in (None, "auto"):
        ckpt = Path(resume)
        if ckpt.is_dir() and (ckpt / "checkpoints").is_dir():  # a run dir: take its latest
            return (run_dir or ckpt), latest_checkpoint(ckpt)
        if not (ckpt / "meta.json").is_file():
            raise ConfigError(f"--resume '{resume}' is not a checkpoint (no meta.json); pass a run dir, "
                              f"RUN/checkpoints/step_<N> or --resume auto")
        ckpt = ckpt.resolve()
        return (run_dir or ckpt.parent.parent), ckpt
    if resume == "auto" and run_dir is None:
        run_dir = newest_run(base)
    if run_dir is None:
        run_dir = base / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    if has_checkpoint(run_dir):
        if resume != "auto":
            raise ConfigError(f"run dir '{run_dir}' already has checkpoints; pass --resume auto to continue "
                              f"it, or choose another run.dir=...")
        return run_dir, latest_checkpoint(run_dir)
    return run_dir, None


# -- holding it --------------------------------------------------------------------------------

_held: list[int] = []  # descriptors of the locks this process holds


def _drop_in_child() -> None:
    """A forked child (a DataLoader worker) closes its copies of the lock descriptors: the lock then
    lives exactly as long as the main process (flock goes when the last descriptor closes)."""
    for fd in _held:
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_drop_in_child)


FLOCK_MISSING = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)  # Lustre without -o flock, some NFS setups
HEARTBEAT_S = 30.0  # how often a heartbeat lock is refreshed
STALE_S = 300.0  # a heartbeat older than this belongs to a dead run (generous: node clocks differ a little)


class RunLock:
    """An exclusive flock on RUN_DIR/.lock, held by the main process until it exits or `release()`.

    Where the filesystem has no flock (ENOSYS, EOPNOTSUPP, ENOLCK), a HeartbeatLock on RUN_DIR/.lock.heartbeat
    instead (said once)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fallback: HeartbeatLock | None = None
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)  # no O_TRUNC: keep the holder's name
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.read(self.fd, 65536).decode() or "{}")
            except (json.JSONDecodeError, UnicodeDecodeError):
                holder = {}
            os.close(self.fd)
            raise ConfigError(
                f"run dir '{run_dir}' is in use by a live run: pid {holder.get('pid', '?')} on host "
                f"{holder.get('host', '?')} (started {holder.get('started', '?')}). Two runs in one dir would "
                f"corrupt each other; wait for it to end, stop it, or choose another run.dir=...") from None
        except OSError as exc:
            os.close(self.fd)
            if exc.errno not in FLOCK_MISSING:
                raise
            print(f"note: {run_dir} has no flock ({os.strerror(exc.errno)}); holding it with a lock file and a "
                  f"heartbeat instead ({HEARTBEAT_S:.0f} s; a heartbeat older than {STALE_S:.0f} s is a dead run's)",
                  file=sys.stderr, flush=True)
            self.fallback = HeartbeatLock(run_dir / ".lock.heartbeat", run_dir)
            return
        _held.append(self.fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, json.dumps(_holder()).encode())

    def release(self) -> None:
        if self.fallback is not None:
            self.fallback.release()
        elif self.fd in _held:
            _held.remove(self.fd)
            os.close(self.fd)  # closing the last descriptor drops the flock


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": now(), "command": sys.argv}


class HeartbeatLock:
    """A lock file created exclusively (O_EXCL, atomic on NFS and Lustre) holding pid, host, start and a
    heartbeat (wall-clock seconds) that a daemon thread refreshes every HEARTBEAT_S while the process lives.

    Hand-written because without flock nothing tells a dead holder from a live one: a lock whose
    heartbeat is older than STALE_S, or whose pid is gone on this same host, is a dead run's and is
    taken over with a message naming it; a live one refuses the start like the flock does."""

    def __init__(self, path: Path, run_dir: Path):
        self.path, self._stop = path, threading.Event()
        self.info = {**_holder(), "heartbeat": time.time()}
        while not self._create():
            holder = self._read(path)
            if holder is None:  # released or taken over between our two calls: try again
                continue
            dead = self._dead(holder)
            if not dead:
                age = time.time() - float(holder.get("heartbeat", 0))
                raise ConfigError(
                    f"run dir '{run_dir}' is in use by a live run: pid {holder.get('pid', '?')} on host "
                    f"{holder.get('host', '?')} (started {holder.get('started', '?')}, heartbeat {age:.0f} s ago in "
                    f"{path}). Two runs in one dir would corrupt each other; wait for it to end, stop it, or choose "
                    f"another run.dir=... (a heartbeat older than {STALE_S:.0f} s counts as dead)")
            aside = path.with_name(f"{path.name}.dead-{socket.gethostname()}-{os.getpid()}")
            try:
                os.replace(path, aside)
            except FileNotFoundError:
                continue
            if self._read(aside) != holder:  # another start took it over first: leave theirs as it was
                os.replace(aside, path)
                continue
            aside.unlink(missing_ok=True)
            print(f"note: taking over the lock of a dead run in {run_dir}: pid {holder.get('pid', '?')} on host "
                  f"{holder.get('host', '?')} (started {holder.get('started', '?')}), {dead}", file=sys.stderr,
                  flush=True)
        self._thread = threading.Thread(target=self._beat, name="distgen-run-lock-heartbeat", daemon=True)
        self._thread.start()
        atexit.register(self.release)

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {}  # cut mid-write by a crash; judged by its heartbeat (none: dead)

    @staticmethod
    def _dead(holder: dict) -> str | None:
        """Why `holder` is a dead run's, or None when it may be alive."""
        age = time.time() - float(holder.get("heartbeat", 0) or 0)
        if age > STALE_S:
            return f"its heartbeat is {age:.0f} s old (over {STALE_S:.0f} s)"
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return f"pid {holder['pid']} no longer runs on this host"
            except PermissionError:
                pass  # alive, someone else's
        return None

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self.info))
        return True

    def _mine(self) -> bool:
        holder = self._read(self.path) or {}
        return holder.get("pid") == self.info["pid"] and holder.get("host") == self.info["host"]

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self._mine():  # judged dead (e.g. stopped for longer than STALE_S) and taken over
                print(f"warning: {self.path} was taken over by another start; two runs may now share this run "
                      f"dir", file=sys.stderr, flush=True)
                return
            self.info["heartbeat"] = time.time()
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps(self.info))
                os.replace(tmp, self.path)
            except OSError:  # a full disk or a hiccup: the next beat tries again, well inside STALE_S
                pass

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._mine():
            self.path.unlink(missing_ok=True)


# -- recording what ran ------------------------------------------------------------------------

def git_commit() -> dict:
    """The distgen checkout's commit and whether tracked files differ from it (None outside git)."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return {"commit": None, "commit_dirty": None}
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "commit_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "commit_dirty": None}


class RunRecord:
    """RUN_DIR/run.json: what ran, where, and how it ended (main process only)."""

    def __init__(self, run_dir: Path, topology: dict, steps: int, family: dict | None = None):
        """`family`: where the family class came from (family_module, family_file: distgen/plugins.py)."""
        self.path, self.steps = run_dir / "run.json", steps
        self.facts = {"command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [], **git_commit(),
                      **topology, **(family or {}), "host": socket.gethostname(), "train_steps": steps}
        self.data: dict = {}

    def start(self, step: int, resumed_from: Path | None) -> None:
        try:
            previous = json.loads(self.path.read_text()) if self.path.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            previous = None  # a run.json cut by a full disk: its sessions are lost, the run is not
        sessions = previous.pop("sessions", []) + [previous] if previous else []
        self.data = {**self.facts, "started": now(), "ended": None, "status": "running", "first_step": step,
                     "last_step": step, "resumed_from": str(resumed_from) if resumed_from else None,
                     "stopped_early": None, "why": None, "sessions": sessions}
        self._write()

    def end(self, last_step: int, why: str | None = None, failed: bool = False) -> None:
        early = last_step < self.steps
        status = "failed" if failed else ("stopped early" if early else "finished")
        self.data.update(ended=now(), status=status, last_step=last_step, stopped_early=early,
                         why=why if early or failed else None)
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def discard(run_dir: Path) -> None:
    """Remove a run dir this start created and never trained in (only our own files can be in it)."""
    shutil.rmtree(run_dir, ignore_errors=True)
