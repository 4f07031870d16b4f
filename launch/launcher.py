"""Run `accelerate launch` so that a signal to this one process stops the training cleanly.

    python launch/launcher.py [--shutdown-timeout S] [--stop-code C] [accelerate launch flags] \\
        launch/train.py RECIPE.yaml [key=value ...] [--resume auto]
    ACCELERATE_USE_CPU=1 python launch/launcher.py --multi_gpu --num_processes 2 launch/train.py recipes/quickstart.yaml

The command to use outside SLURM (a workstation, Kubernetes, LSF/PBS, a plain `kill`); launch/slurm/
train.sbatch uses it too. SIGUSR1, SIGTERM or SIGINT (Ctrl-C) to this process is passed to the training
processes, which stop at the next step boundary, write one checkpoint and exit; SIGHUP (the terminal or
ssh session closed) stops them the same way, passed on as SIGTERM. This process exits after them, with:

    0        the training finished (also when the signal came after its last step: nothing to resume)
    128 + N  it stopped cleanly on signal N (HUP: 129, USR1: 138, TERM: 143, INT: 130); the same command
             with --resume auto continues it. --stop-code C exits C instead (train.sbatch: 0, a clean requeue)
    124      the training processes were still running --shutdown-timeout seconds (default 600)
             after the signal: they were killed (the checkpoint of the stop may be missing)
    other    the training failed: accelerate launch's exit code

Why not `accelerate launch` alone: it does not pass USR1 on (USR1's default action kills it at once,
exit 138, and its training processes train on as orphans), and after TERM or INT its elastic agent
SIGKILLs the training processes 30 s later, however long their checkpoint takes. So here `accelerate
launch` runs in its own session with TERM, INT and USR1 ignored (torchrun's signals_to_handle, set
through PET_SIGNALS_TO_HANDLE, keeps its agent from taking TERM and INT back), and dies with this
process whatever kills it (a parent-death SIGKILL); its training processes then stop by themselves
(distgen/loops/signals.py).
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PASSED_AS = {signal.SIGHUP: signal.SIGTERM}  # the training processes stop on USR1, TERM and INT
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
USAGE = ("usage: launcher.py [--shutdown-timeout S] [--stop-code C] [--accelerate PATH] "
         "[accelerate launch flags] launch/train.py RECIPE.yaml [key=value ...]")


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid`: the training processes of `accelerate launch` (its elastic agent
    and its single-process launcher both start them as direct children)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def catches(pid: int, sig: int) -> bool:
    """Has process `pid` a handler for `sig` yet (SigCgt in /proc/PID/status)? A training process ignores
    stop signals until launch/train.py installs its handlers, and one signal is all it needs."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration, ValueError):
        return False
    return bool(mask >> (sig - 1) & 1)


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _child_setup() -> None:  # runs in the child between fork and exec
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # inherited through exec: only this process decides
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def say(message: str) -> None:
    """One line on stderr; a hung-up terminal (SIGHUP) may have taken stderr with it, and the stop goes on."""
    try:
        print(message, file=sys.stderr, flush=True)
    except OSError:
        pass


def outcome(path: Path) -> str:
    """What the main training process wrote at its end (distgen/loops/signals.note_end): "finished",
    "stopped", or "" when it wrote nothing (it ended before its run began)."""
    try:
        return path.read_text().split()[0]
    except (OSError, IndexError):
        return ""


def parse(argv: list[str]) -> tuple[float, int | None, str, list[str]]:
    timeout, stop_code, accelerate = 600.0, None, ""
    bin_accelerate = Path(sys.executable).parent / "accelerate"
    while argv and argv[0] in ("--shutdown-timeout", "--stop-code", "--accelerate"):
        if len(argv) < 2:
            raise SystemExit(f"error: {argv[0]} needs a value\n{USAGE}")
        flag, value, argv = argv[0], argv[1], argv[2:]
        try:
            if flag == "--shutdown-timeout":
                timeout = float(value)
            elif flag == "--stop-code":
                stop_code = int(value)
            else:
                accelerate = value
        except ValueError:
            raise SystemExit(f"error: {flag} must be a number, got {value!r}\n{USAGE}") from None
    if not argv:
        raise SystemExit(USAGE)
    accelerate = accelerate or (str(bin_accelerate) if bin_accelerate.exists() else shutil.which("accelerate") or "")
    if not accelerate:
        raise SystemExit("error: no `accelerate` next to this python or on PATH; pass --accelerate PATH")
    return timeout, stop_code, accelerate, argv


def main(argv: list[str] | None = None) -> int:
    timeout, stop_code, accelerate, rest = parse(sys.argv[1:] if argv is None else argv)
    received: list[int] = []
    for sig in SIGNALS:
        signal.signal(sig, lambda signum, frame: received.append(signum))
    # torchrun's --signals_to_handle (read from PET_SIGNALS_TO_HANDLE by the parser Accelerate fills):
    # without TERM and INT its elastic agent leaves them ignored, as _child_setup sets them
    outcome_dir = tempfile.TemporaryDirectory(prefix="distgen-launcher-")
    outcome_file = Path(outcome_dir.name) / "outcome"
    env = {**os.environ, "PET_SIGNALS_TO_HANDLE": "SIGHUP,SIGQUIT", "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGHUP,SIGQUIT",
           "DISTGEN_SHUTDOWN_TIMEOUT": str(int(timeout)), "DISTGEN_OUTCOME_FILE": str(outcome_file)}
    with outcome_dir:
        return _run([accelerate, "launch", *rest], env, timeout, stop_code, received, outcome_file)


def _run(cmd: list[str], env: dict, timeout: float, stop_code: int | None, received: list[int],
         outcome_file: Path) -> int:
    launcher = subprocess.Popen(cmd, env=env, preexec_fn=_child_setup, start_new_session=True)
    stop, deadline, told = 0, None, set()
    while True:
        try:
            code = launcher.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if received and not stop:
            stop, deadline = received[0], time.monotonic() + timeout
            passed = PASSED_AS.get(stop, stop)
            say(f"launcher: {signal.Signals(stop).name}: the training processes stop at the next step boundary "
                f"with a checkpoint (waiting up to {timeout:.0f} s)")
        if stop:
            # Each training process once, as soon as it has its handler (it may still be starting up).
            ready = [p for p in children(launcher.pid) if p not in told and catches(p, passed)]
            _kill(ready, passed)
            told.update(ready)
            if time.monotonic() > deadline:
                say(f"launcher: the training processes did not stop within {timeout:.0f} s: killing them")
                workers = children(launcher.pid)
                _kill([p for w in workers for p in children(w)] + workers, signal.SIGKILL)
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
                return 124
    if stop and code == 0:
        if outcome(outcome_file) == "finished":  # the signal came after the last step: nothing to resume
            say(f"launcher: {signal.Signals(stop).name} came after the last step: the training finished (exit 0)")
            return 0
        code = stop_code if stop_code is not None else 128 + stop
        say(f"launcher: stopped cleanly on {signal.Signals(stop).name} (exit {code}); the same command with "
            f"--resume auto continues the run")
    return code


if __name__ == "__main__":
    sys.exit(main())
