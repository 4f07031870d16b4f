"""`make gpu-check` (launch/gpu_check.py) on a machine without CUDA: one line that says so, exit 0."""
from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

from conftest import ROOT, launch_module, run


def test_gpu_check_without_cuda_says_so_and_exits_0():  # run() hides any GPU
    result = run([sys.executable, "launch/gpu_check.py"], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = [json.loads(s) for s in result.stdout.splitlines() if s.strip()]
    assert line["check"] == "gpu-check" and line["ok"] is None and "no CUDA device" in line["skipped"]


def test_checks_run_with_the_callers_pythonpath(monkeypatch, tmp_path):
    """The checks' processes import distgen from the checkout and still see packages the caller put on
    PYTHONPATH (a cluster module, `pip install --target`); replacing it made every check fail to import."""
    gpu_check = launch_module("launch/gpu_check.py")
    for callers, want in (("/opt/site", [str(ROOT), "/opt/site"]), (None, [str(ROOT)])):
        if callers is None:
            monkeypatch.delenv("PYTHONPATH")
        else:
            monkeypatch.setenv("PYTHONPATH", callers)
        assert gpu_check.Checker(SimpleNamespace(device="cpu"), tmp_path).env["PYTHONPATH"].split(os.pathsep) == want


def test_the_syncbn_check_passes_on_the_cpu_and_fails_on_a_wrong_kernel(monkeypatch):
    """launch/gpu_check.py's syncbn check (gloo on the CPU here, NCCL on a GPU): it compares distgen's
    SyncBatchNorm with torch's BatchNorm2d and counts host reads and all_reduce calls."""
    gpu_check = launch_module("launch/gpu_check.py")
    line = gpu_check.syncbn_check("cpu")
    assert line["ok"] is True, line
    assert line["host_reads"] == 0 and line["all_reduces_per_step"] == 2 and line["max_rel_diff_fp32"] < 1e-4
    from distgen import sync_batchnorm

    monkeypatch.setattr(sync_batchnorm, "_per_channel", lambda t, x: t.view(1, -1, *([1] * (x.dim() - 2))) * 1.01)
    broken = gpu_check.syncbn_check("cpu")
    assert broken["ok"] is False and broken["max_rel_diff_fp32"] > 1e-3
