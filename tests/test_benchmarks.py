"""The benchmark scripts' own logic on the CPU: benchmarks/gpu.py (CUDA-only figures) runs its grid on
tiny nets with --device cpu, counts FLOPs through the gradient penalty, and says so when CUDA is missing.

    .venv/bin/python -m pytest tests/test_benchmarks.py
"""
from __future__ import annotations

import json
import sys

import pytest

from conftest import run


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_gpu_benchmark_grid_on_tiny_nets_on_the_cpu():
    result = run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--families", "dcgan", "wgan_gp",
                  "--batches", "4", "--precisions", "fp32", "--channels-last", "0", "1", "--compile", "0",
                  "--steps", "4", "--width", "8", "--peak-tflops", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = _last_json(result.stdout)
    assert out["benchmark"] == "gpu" and out["configurations"] == out["measured"] == 4
    rows = {(r["family"], r["channels_last"]): r for r in out["results"]}
    for r in rows.values():
        assert r["img_s"] > 0 and 0 < r["mfu"] < 1 and r["flops_per_step"] > 0
    assert rows["dcgan", False]["ratio"] == 1.0  # the plain configuration is the baseline
    assert rows["dcgan", True]["ratio"] == pytest.approx(rows["dcgan", True]["img_s"] / rows["dcgan", False]["img_s"],
                                                         rel=1e-2)
    # a WGAN-GP generator step holds 5 critic steps, each with a double backward: far more work than DCGAN's
    assert rows["wgan_gp", False]["flops_per_step"] > 3 * rows["dcgan", False]["flops_per_step"]
    assert set(out["best"]) == {"dcgan/4", "wgan_gp/4"} and out["ratio"] >= 1.0


def test_gpu_benchmark_without_cuda_says_so_and_measures_nothing():  # run() hides any GPU
    result = run([sys.executable, "benchmarks/gpu.py"])
    assert result.returncode == 0 and "has none; nothing measured" in result.stdout
    out = _last_json(result.stdout)
    assert out["ratio"] is None and out["skipped"] == "no CUDA device"
