"""`make gpu-check` (launch/gpu_check.py) on a machine without CUDA: one line that says so, exit 0."""
from __future__ import annotations

import json
import sys

from conftest import run


def test_gpu_check_without_cuda_says_so_and_exits_0():  # run() hides any GPU
    result = run([sys.executable, "launch/gpu_check.py"], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    (line,) = [json.loads(s) for s in result.stdout.splitlines() if s.strip()]
    assert line["check"] == "gpu-check" and line["ok"] is None and "no CUDA device" in line["skipped"]
