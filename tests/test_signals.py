"""A signal to the launcher stops the run cleanly and never leaves an orphaned worker.

Real 2-process CPU launches (ACCELERATE_USE_CPU=1 --multi_gpu --num_processes 2) of a tiny GAN, signalled
at the launcher's pid as a user, a scheduler or `kill` would. log.every=1, so whichever step boundary the
loop checks for a stop at, the stop checkpoint is the last step logged.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import BIN, ROOT, TINY_GAN, free_port, metrics

LAUNCH = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no"]


def _args(digits, run_dir: Path, steps: int = 100000) -> list[str]:
    return ["launch/train.py", "recipes/dcgan_digits_smoke.yaml", *TINY_GAN, "log.every=1", "log.sample_every=100000",
            f"data.root={digits}", f"run.dir={run_dir}", f"train.steps={steps}", "run.checkpoint_every=100000",
            "run.keep_last=0"]


def _start(launcher: list[str], args: list[str], log: Path) -> subprocess.Popen:
    """Start a launch, its output appended to `log`."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "",
           "WANDB_MODE": "disabled", "ACCELERATE_USE_CPU": "1"}
    cmd = [*launcher, *LAUNCH, "--main_process_port", str(free_port()), *args]
    # its own session, as a launcher started by a scheduler or from another terminal: only what this
    # test sends reaches it. Output to a file: a pipe nobody reads would block the training.
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _descendants(pid: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    def running(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    return {p for p in pids if running(p)}


def _wait_for_training(run_dir: Path, proc: subprocess.Popen, log: Path, since: int = 0, timeout: float = 240):
    """Until the run has logged a step after `since`."""
    deadline = time.time() + timeout
    while not ((run_dir / "metrics.jsonl").exists() and metrics(run_dir) and metrics(run_dir)[-1]["step"] > since):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "training never logged a step:\n" + log.read_text()[-3000:]
        time.sleep(0.5)


def _wait_gone(pids: set[int], log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while _alive(pids) and time.time() < deadline:
        time.sleep(0.5)
    assert not _alive(pids), f"still running {timeout:.0f} s after the launcher ended:\n{log.read_text()[-3000:]}"


def _checkpoints(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / "checkpoints").glob("step_*")}


def _stop_checkpoint(run_dir: Path, before: set[str], since: int = 0) -> int:
    """The checkpoint of a run stopped early: one more than `before`, at the last step logged (after
    `since`), every step logged once."""
    step = int((run_dir / "checkpoints" / "latest").resolve().name.split("_")[1])
    assert step > since and [r["step"] for r in metrics(run_dir)] == list(range(1, step + 1))
    assert _checkpoints(run_dir) == before | {f"step_{step}"}  # (run.keep_last=0: all kept)
    return step


def test_usr1_term_int_to_the_launcher_stop_every_rank_at_a_checkpoint_that_resume_continues(digits, tmp_path):
    """One run signalled at its launcher's pid three times (USR1, then TERM to the resumed run, then INT to
    the next), then killed with SIGKILL: each stop leaves every process gone, one more checkpoint at the
    step reached, the documented exit code, and --resume auto continues from exactly there."""
    run_dir, log = tmp_path / "run", tmp_path / "launcher.log"
    launcher = [sys.executable, "launch/launcher.py"]
    step = 0
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        proc = _start(launcher, [*_args(digits, run_dir), "--resume", "auto"], log)
        _wait_for_training(run_dir, proc, log, since=step)
        out = log.read_text()
        if step:
            assert f"resumed from {run_dir / 'checkpoints' / f'step_{step}'}" in out, out[-3000:]
        tree, before = _descendants(proc.pid), _checkpoints(run_dir)
        assert len(tree) >= 3  # accelerate launch and its two training processes
        proc.send_signal(sig)
        proc.wait(timeout=240)
        _wait_gone(tree, log)
        out = log.read_text()
        if sig != signal.SIGKILL:  # README: 128 + N after a clean stop on signal N
            assert proc.returncode == 128 + sig, out[-3000:]
        step = _stop_checkpoint(run_dir, before, since=step)
        # after SIGKILL of the launcher the training processes stop on their parent-death SIGTERM
        name = "SIGTERM" if sig == signal.SIGKILL else sig.name
        assert f"stopping at step {step} ({name}): checkpoint saved" in out and "Traceback" not in out, out[-3000:]


def test_a_killed_accelerate_launch_leaves_no_worker_alive(digits, tmp_path):
    """A bare `accelerate launch` SIGKILLed (nothing can be forwarded): its training processes notice the
    dead launcher, stop at the next step with a checkpoint and exit."""
    run_dir, log = tmp_path / "run", tmp_path / "launcher.log"
    proc = _start([str(BIN / "accelerate"), "launch"], _args(digits, run_dir), log)
    _wait_for_training(run_dir, proc, log)
    tree = _descendants(proc.pid)
    assert len(tree) >= 2
    proc.kill()
    proc.wait()
    _wait_gone(tree, log)
    step = _stop_checkpoint(run_dir, set())
    assert f"stopping at step {step} (SIGTERM): checkpoint saved" in log.read_text()
