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
