"""gpu_check's `sync` check (launch/gpu_check.py) run on the CPU: the wrapper finds and wraps every
micro-batch of the training step (on CUDA each runs under torch.cuda.set_sync_debug_mode("error")), and a
check that wrapped nothing fails instead of passing vacuously."""
from __future__ import annotations

from types import SimpleNamespace

from conftest import launch_module


def test_sync_check_wraps_every_micro_batch_of_a_training_run(digits, tmp_path, monkeypatch):
    gpu_check = launch_module("launch/gpu_check.py")
    assert ("sync", ("check_sync",)) in gpu_check.jobs(["sync"], ["dcgan"])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "digits").symlink_to(digits)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    checker = gpu_check.Checker(SimpleNamespace(device="cpu"), tmp_path)
    line = checker.check_sync()
    assert line["ok"] is True, line
    assert line["strict_micro_batches"] == 2 * gpu_check.STEPS  # DCGAN: one D and one G micro-batch per step
    # a run in which no micro-batch went through the wrapper (here: none ran) is a failed check
    idle = gpu_check.STRICT_SYNC.replace('runpy.run_path("launch/train.py", run_name="__main__")', "pass")
    assert idle != gpu_check.STRICT_SYNC
    monkeypatch.setattr(gpu_check, "STRICT_SYNC", idle)
    assert checker.check_sync() == {"ok": False, "strict_micro_batches": 0, "cuda": False}
