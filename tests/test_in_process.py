"""The suite's in-process runner (conftest.main_in_process): a run inside pytest leaves the process as it
found it, so the tests after it see what a fresh process would (signal handlers, threads, environment,
cwd, Accelerate's state), and its output comes back like a subprocess's."""
from __future__ import annotations

import os
import signal

import torch
from accelerate.state import AcceleratorState

from conftest import TINY_CLS, main_in_process


def test_a_run_in_process_leaves_the_process_as_it_found_it(digits, tmp_path):
    before = {"handlers": {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)},
              "threads": torch.get_num_threads(), "env": dict(os.environ), "cwd": os.getcwd()}
    os.chdir(tmp_path)  # a test somewhere else: the run still starts in the repo root, and comes back here
    try:
        result = main_in_process("launch/train.py", ["recipes/classifier_digits.yaml", *TINY_CLS,
                                                     f"data.root={digits}", f"run.dir={tmp_path / 'run'}",
                                                     "train.steps=2", "eval.every=2", "run.checkpoint_every=2",
                                                     "train.threads=1"], env={"DISTGEN_TEST_MARK": "1"})
        assert os.getcwd() == str(tmp_path)
    finally:
        os.chdir(before["cwd"])
    assert result.returncode == 0 and f"run dir: {tmp_path / 'run'}" in result.stdout, result.stderr[-3000:]
    # the loop installed its stop handlers (distgen/loops/signals.py) and pinned one thread: both put back
    assert {s: signal.getsignal(s) for s in before["handlers"]} == before["handlers"]
    assert torch.get_num_threads() == before["threads"]
    for key in ("DISTGEN_TEST_MARK", "CUDA_VISIBLE_DEVICES", "WANDB_MODE"):  # what the call set
        assert os.environ.get(key) == before["env"].get(key), key
    assert not AcceleratorState._shared_state
    # a failure comes back as an exit code and a message, as from a process
    bad = main_in_process("launch/train.py", ["recipes/classifier_digits.yaml", "optim.lr_x=1", "--dry-run"])
    assert bad.returncode == 2 and "optim.lr_x" in bad.stderr
