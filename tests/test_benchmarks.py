"""The benchmark scripts' own logic on the CPU: benchmarks/gpu.py (CUDA-only figures) runs its grid on
tiny nets with --device cpu, counts FLOPs through the gradient penalty, and says so when CUDA is missing.

    .venv/bin/python -m pytest tests/test_benchmarks.py
"""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from conftest import run


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_gpu_benchmark_grid_on_tiny_nets_on_the_cpu_beside_a_bare_loop(tmp_path, monkeypatch, fresh_accelerate):
    # 2 families x channels-last 0/1 at one batch (each configuration and each FLOP count is its own
    # process, ~5 s of imports on 2 cores); --bare 1: the hand-written loop on the same nets
    # (benchmarks/bare_loops.py) runs in each configuration's process, and vs_bare is the harness's
    # img/s over its own
    digits = tmp_path / "digits"  # built here, not in the checkout's data/digits
    env = {"DISTGEN_DIGITS": str(digits)}
    result = run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--families", "dcgan", "wgan_gp",
                  "--batches", "4", "--precisions", "fp32", "--channels-last", "0", "1", "--compile", "0",
                  "--bare", "1", "--steps", "4", "--width", "8", "--peak-tflops", "1", "--flop-steps", "1"], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (digits / "index.json").is_file()
    out = _last_json(result.stdout)
    assert out["benchmark"] == "gpu" and out["configurations"] == out["measured"] == 4
    assert out["torch"] == torch.__version__
    rows = {(r["family"], r["batch"], r["channels_last"]): r for r in out["results"]}
    for r in rows.values():
        assert r["img_s"] > 0 and 0 < r["mfu"] < 1 and r["flops_per_step"] > 0
        assert r["ratio"] > 0 and (r["ratio"] == 1.0) == (not r["channels_last"])  # plain = fp32, NCHW, eager
        assert r["bare_img_s"] > 0 and r["vs_bare"] == pytest.approx(r["img_s"] / r["bare_img_s"], rel=1e-3)
    # a WGAN-GP generator step holds 5 critic steps (5 real batches), each with a double backward
    assert rows["wgan_gp", 4, False]["img_s"] == pytest.approx(rows["wgan_gp", 4, False]["steps_s"] * 4 * 5, rel=1e-3)
    assert rows["wgan_gp", 4, False]["flops_per_step"] > 3 * rows["dcgan", 4, False]["flops_per_step"]
    assert set(out["best"]) == {"dcgan/4", "wgan_gp/4"}
    # FLOPs are counted per training step, without set-up or the final grid: linear in the batch size
    # (counted here, in this process: a FLOP count is a short run of the loop)
    from conftest import launch_module

    monkeypatch.setenv("DISTGEN_DIGITS", str(digits))
    monkeypatch.setenv("ACCELERATE_USE_CPU", "1")
    gpu = launch_module("benchmarks/gpu.py")
    args = SimpleNamespace(device="cpu", width=8, flop_steps=1)
    assert gpu.flops_per_step(args, "dcgan", 8) == pytest.approx(2 * rows["dcgan", 4, False]["flops_per_step"],
                                                                 rel=0.02)
    # a captured configuration is train.cuda_graph (on the CPU the loop refuses it: tests/test_capture.py)
    assert gpu.config_for("wgan_gp", 4, 4, "cpu", 8, False, False, captured=True).train.cuda_graph


def test_gpu_benchmark_without_cuda_says_so_and_measures_nothing():  # run() hides any GPU
    result = run([sys.executable, "benchmarks/gpu.py"])
    assert result.returncode == 0 and "has none; nothing measured" in result.stdout
    out = _last_json(result.stdout)
    assert out["ratio"] is None and out["skipped"] == "no CUDA device"


def test_loader_benchmark_prints_its_ratios():
    result = run([sys.executable, "benchmarks/loader.py", "--images", "192", "--rounds", "1", "--train-steps", "0"])
    assert result.returncode == 0, result.stderr[-3000:]
    out = _last_json(result.stdout)
    assert out["benchmark"] == "loader" and out["ratio"] == out["ratio_raw"] > 0 and out["ratio_ram"] > 0
    for name in ("png", "raw", "ram", "folder_tv"):
        assert out[f"{name}_images_per_core_s"] > 0
    assert out["raw_bytes_per_image"] > 64 * 64 * 3  # the pixels themselves, uncompressed


def test_gpu_benchmark_gives_up_on_a_configuration_past_its_timeout_and_still_reports(tmp_path):
    """A hung configuration (a compile that never ends, a stuck collective) must not eat a GPU session's
    few minutes: its process is killed after --child-timeout-s, its row says so, and the grid goes on to
    print its JSON line."""
    env = {"DISTGEN_DIGITS": str(tmp_path / "digits")}
    result = run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--families", "dcgan", "--batches", "4",
                  "--precisions", "fp32", "--channels-last", "0", "1", "--compile", "0", "--steps", "4",
                  "--width", "8", "--child-timeout-s", "0.05"], env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = _last_json(result.stdout)
    assert out["configurations"] == 2 and out["measured"] == 0
    assert all("timed out after 0.05 s" in r["error"] for r in out["results"]), out["results"]
