"""How a stopped run ends: its exit status and what launch/launcher.py says, for HUP, TERM after the last step
and Ctrl-C.

The launcher tests run the real launch/launcher.py over a stand-in for `accelerate launch` (its --accelerate
flag) whose one "training process" catches TERM/INT/USR1 as distgen's does and, once signalled, writes the
outcome a real main process writes (distgen/loops/signals.note_end): a second each. The Ctrl-C test trains for
real, as `python launch/train.py`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import BIN, ROOT, TINY_GAN
from distgen.loops import signals

# A training process: ready once its handlers are in, then waits for a stop signal and writes `outcome`
STAND_IN = """
import os, signal, sys, time
got = []
for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda s, f: got.append(s))
outcome, ready = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not got:
    time.sleep(0.05)
with open(os.environ["DISTGEN_OUTCOME_FILE"], "w") as f:
    f.write(outcome + " 7\\n")
print("stand-in got", signal.Signals(got[0]).name, flush=True)
"""


def fake_accelerate(tmp_path: Path) -> Path:
    """An `accelerate` whose `launch ARGS` runs the stand-in training process as its child, and exits with its status."""
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    path = tmp_path / "accelerate"
    path.write_text(f"#!{sys.executable}\nimport subprocess, sys\n"
                    f"sys.exit(subprocess.call([sys.executable, {str(tmp_path / 'stand_in.py')!r}, *sys.argv[2:]]))\n")
    path.chmod(0o755)
    return path


def launch_and_signal(tmp_path: Path, sig: int, outcome: str) -> subprocess.CompletedProcess:
    ready = tmp_path / "ready"
    cmd = [sys.executable, "launch/launcher.py", "--accelerate", str(fake_accelerate(tmp_path)), outcome, str(ready)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_hup_to_the_launcher_stops_the_training_cleanly_with_status_129(tmp_path):
    """SIGHUP killed the launcher, and with it `accelerate launch`, whose pipe was the training processes'
    stderr: their checkpoint was written, then run.json said "failed"."""
    result = launch_and_signal(tmp_path, signal.SIGHUP, "stopped")
    assert result.returncode == 129, result
    assert "stand-in got SIGTERM" in result.stdout  # passed on as the TERM training processes stop on
    assert "stopped cleanly on SIGHUP (exit 129)" in result.stderr and "--resume auto" in result.stderr


def test_term_after_the_last_step_is_a_finished_run_not_a_stop(tmp_path):
    result = launch_and_signal(tmp_path, signal.SIGTERM, "finished")
    assert result.returncode == 0, result
    assert "after the last step: the training finished" in result.stderr and "--resume auto" not in result.stderr


def test_term_before_the_last_step_is_still_a_clean_stop(tmp_path):
    result = launch_and_signal(tmp_path, signal.SIGTERM, "stopped")
    assert result.returncode == 143 and "stopped cleanly on SIGTERM (exit 143)" in result.stderr, result


@pytest.mark.parametrize("step, received, code, written", [
    (4, [signal.SIGINT], 130, "stopped 4"),  # Ctrl-C before the last step
    (4, [signal.SIGUSR1, signal.SIGTERM], 138, "stopped 4"),  # the first signal names the stop
    (10, [signal.SIGTERM], 0, "finished 10"),  # a signal after the last step stops nothing
    (10, [], 0, "finished 10"),
])
def test_exit_code_and_outcome_file(tmp_path, monkeypatch, step, received, code, written):
    monkeypatch.setattr(signals, "_received", list(received))
    monkeypatch.setattr(signals, "_stopped", [])
    for var in ("ACCELERATE_MIXED_PRECISION", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DISTGEN_OUTCOME_FILE", str(tmp_path / "outcome"))
    signals.note_end(SimpleNamespace(is_local_main_process=True), step, 10)
    assert signals.exit_code() == code
    assert (tmp_path / "outcome").read_text() == written + "\n"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # under a launcher: 0, the launcher decides
    assert signals.exit_code() == 0


def test_ctrl_c_to_python_train_py_exits_130_so_and_and_stops(digits, tmp_path):
    """`python launch/train.py ... && python launch/evaluate.py ...` evaluated a half-trained run: a stop
    exited 0."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "",
           "WANDB_MODE": "disabled"}
    for var in ("ACCELERATE_MIXED_PRECISION", "TORCHELASTIC_RUN_ID", "DISTGEN_OUTCOME_FILE"):
        env.pop(var, None)
    cmd = [sys.executable, "launch/train.py", "recipes/dcgan_digits_smoke.yaml", *TINY_GAN, "log.every=1",
           "log.sample_every=100000", f"data.root={digits}", f"run.dir={run_dir}", "train.steps=100000",
           "run.checkpoint_every=100000"]
    log = tmp_path / "train.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        metrics = run_dir / "metrics.jsonl"
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, log.read_text()[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "stopped early" and "SIGINT" in record["why"]
    assert (run_dir / "checkpoints" / "latest").exists()
