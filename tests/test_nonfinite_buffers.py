"""A skipped non-finite step leaves no non-finite BatchNorm statistics behind: its forward already moved
them (one NaN pixel makes D's running_mean NaN, and a momentum update never recovers), so the loop puts
such values back at every boundary where buffers are read (distgen/loops/guard.py repair_buffers)."""
from __future__ import annotations

import json

import torch
from accelerate.state import AcceleratorState, GradientState
from safetensors.torch import load_file

from conftest import ROOT, TINY_GAN
from distgen import recipes


def test_one_nan_pixel_leaves_batchnorm_statistics_finite(digits, tmp_path, monkeypatch):
    from distgen.loops import adversarial

    real_next = adversarial.Streams.next
    calls = {"n": 0}

    def next_with_a_nan_pixel(self, device):
        batch, n = real_next(self, device)
        calls["n"] += 1
        if calls["n"] == 3:  # the third D batch: one NaN pixel
            batch["image"] = batch["image"].clone()
            batch["image"][0, 0, 0, 0] = float("nan")
        return batch, n

    monkeypatch.setattr(adversarial.Streams, "next", next_with_a_nan_pixel)
    run_dir = tmp_path / "run"
    cfg = recipes.load(ROOT / "recipes" / "dcgan_digits_smoke.yaml", [
        *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=6", "log.every=6",
        "log.sample_every=6", "run.checkpoint_every=6", "train.ema_kimg=1"])
    try:
        adversarial.train(cfg)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["nonfinite_skipped"] > 0  # the NaN step was found and skipped
    ckpt = run_dir / "checkpoints" / "step_6"
    D = load_file(str(ckpt / "D.safetensors"))
    stats_ = {k: v for k, v in D.items() if "running_" in k}
    assert stats_, "D has BatchNorm statistics"
    for k, v in {**D, **load_file(str(ckpt / "G.safetensors"))}.items():
        assert torch.isfinite(v).all(), f"{k} is not finite after a skipped step"
    ema = torch.load(ckpt / "custom_checkpoint_1.pkl", weights_only=True)
    assert all(torch.isfinite(v).all() for k, v in ema.items() if k.startswith("module.")), "the EMA's buffers"
