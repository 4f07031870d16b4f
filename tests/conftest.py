"""Shared fixtures: real digits shards built once per session, and runners for the real entry points."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# data.num_workers=auto resolves to 0 in every run of the suite (in-process and launched: the variable is
# inherited), as the default was before auto: no DataLoader workers forked from the many-threaded pytest
# process (distgen/data/workers.py). Tests about workers ask for them by number or unset this.
os.environ["DISTGEN_MAX_WORKERS"] = "0"

# Tiny nets and batches: every GAN/classifier test run takes seconds on 2 CPU cores.
TINY_GAN = ["model.z_dim=16", "model.width=8", "train.batch_size=16", "log.every=5", "log.sample_every=10"]
TINY_CLS = ["model.width=8", "train.batch_size=32", "log.every=5"]


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    """The embedded digits converted by the real converter (python -m shards digits)."""
    out = tmp_path_factory.mktemp("shards") / "digits"
    from shards.__main__ import main

    assert main(["digits", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def digits_m(tmp_path_factory) -> Path:
    """The embedded MNIST-M analogue (python -m shards digits-m): digits' target / second domain."""
    out = tmp_path_factory.mktemp("shards") / "digits-m"
    from shards.__main__ import main

    assert main(["digits-m", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def digits_small_test(tmp_path_factory) -> Path:
    """The digits converted with a test split of 20 images (2 per class): the FID reference of tests that
    run InceptionV3 on the CPU (about 3 images/s), where the full 359-image split cost a minute."""
    out = tmp_path_factory.mktemp("shards") / "digits-small-test"
    from shards.__main__ import main

    assert main(["digits", "--out", str(out), "--test-fraction", "0.01", "--seed", "0"]) == 0
    return out


def free_port() -> int:
    """A port nobody listens on now, so concurrent 2-process runs never share a rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(args: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a command from the repo root with this interpreter's venv on PATH; never inherits a GPU."""
    full_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}  # None in `env` unsets a variable
    return subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def launch_module(script: str):
    """A launch script (e.g. "launch/compare.py") loaded as a module, not as __main__ (so it installs no
    signal handlers), to call its main() or helpers in this process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"in_process_{Path(script).stem}", ROOT / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main_in_process(script: str, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGV` (a launch/ script with a main(argv)) run in this pytest process: the same main(),
    loops and evaluation, without the ~5 s a new process pays for importing torch (and torch._dynamo, which
    the first optimizer builds) before the few steps a test trains. Only for commands that need no launcher,
    signal, crash or start-up environment of their own (`env` is set around the call: for variables read at
    run time, e.g. DISTGEN_INCEPTION_WEIGHTS, not OMP_NUM_THREADS). What a run leaves in the process is put
    back: Accelerate's singletons (reset as Accelerate's own test cases do between tests), the thread count
    (train.threads), the signal handlers, the environment, argv and cwd; stdout and stderr are captured into
    the returned CompletedProcess."""
    import contextlib
    import io
    import signal
    import traceback

    import torch
    from accelerate.state import AcceleratorState, GradientState

    entry = launch_module(script)
    saved_env, saved_argv, saved_cwd, threads = dict(os.environ), sys.argv, os.getcwd(), torch.get_num_threads()
    # the loop records SIGUSR1/SIGTERM/SIGINT instead of dying of them (distgen/loops/signals.py); left in
    # pytest, a forked child (a multiprocessing Pool worker of a later test) would survive its terminate()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
    out, err = io.StringIO(), io.StringIO()
    for key, value in {"CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled", **(env or {})}.items():
        if value is None:  # None unsets, as in run()
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    sys.argv = [script, *argv]
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = entry.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:  # noqa: BLE001 - reported like a crashed process: exit 1 and the traceback
                traceback.print_exc()
                code = 1
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        torch.set_num_threads(threads)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess([sys.executable, script, *argv], code or 0, out.getvalue(), err.getvalue())


def script(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python launch/NAME.py ARGS` (evaluate, compare, report, dann_table, ...), in this process (main_in_process)."""
    return main_in_process(f"launch/{name}.py", list(args), env)


def train(recipe: str, *overrides: str, launcher: str = "python", resume: str | None = None,
          env: dict | None = None) -> subprocess.CompletedProcess:
    """Train a recipe through launch/train.py and assert it succeeded. launcher="python" with no `env` runs in
    this process (main_in_process), with an `env` as a new process; "accelerate" and "accelerate2" (two CPU
    processes) go through `accelerate launch`."""
    if launcher == "python" and env is None:
        argv = [f"recipes/{recipe}.yaml", *overrides, *(["--resume", resume] if resume else [])]
        result = main_in_process("launch/train.py", argv)
        assert result.returncode == 0, f"launch/train.py {' '.join(argv)} failed:\n{result.stdout[-3000:]}\n" \
                                       f"{result.stderr[-5000:]}"
        return result
    cmd = {"python": [sys.executable],
           "accelerate": [str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
           "accelerate2": [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           "--main_process_port", str(free_port())]}[launcher]
    cmd = cmd + ["launch/train.py", f"recipes/{recipe}.yaml", *overrides]
    if resume:
        cmd += ["--resume", resume]
    if launcher == "accelerate2":
        env = {"ACCELERATE_USE_CPU": "1", **(env or {})}
    result = run(cmd, env)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def fresh_accelerate():
    """Accelerate keeps process-wide state, and a training run installs its signal handlers: start and
    leave every in-process use clean."""
    import signal

    from accelerate.state import AcceleratorState, GradientState

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM)}
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
