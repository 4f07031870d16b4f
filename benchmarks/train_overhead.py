"""Harness overhead: the DCGAN step rate of distgen's adversarial loop against a bare PyTorch loop
with the same nets, batch, optimizers and in-memory data, measured side by side in one run.

    python benchmarks/train_overhead.py [--steps 160] [--rounds 3] [--batch 64] [--width 32]

Both loops train the same fresh DCGAN (same seed) on one fixed in-memory batch; each is timed over
its second half (after warm-up). Rounds alternate harness/bare; the ratio is the median over rounds
of harness img/s / bare img/s (>= 0.95 is the goal). The usual bare loop also computes D's weight
gradients in the generator step, which the harness skips; `ratio_same_work` compares against a bare
loop that skips them too (D.requires_grad_(False)), i.e. the harness's pure overhead. Ends with one
JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import ROOT, digits_shards, finish  # noqa: E402
from distgen import recipes
from distgen.data import load_info
from distgen.families import FAMILIES
from distgen.loops import adversarial


def make_cfg(args, run_dir: str):
    return recipes.load(ROOT / "recipes" / "dcgan_digits_smoke.yaml", [
        f"data.root={digits_shards()}", f"model.width={args.width}", "model.z_dim=100",
        f"train.batch_size={args.batch}", f"train.steps={args.steps}", f"log.every={args.steps // 2}",
        f"log.sample_every={10 ** 9}", f"run.checkpoint_every={10 ** 9}", f"run.dir={run_dir}"])


def harness_rate(args, batch) -> float:
    """img/s of the second half of a harness run, fed the in-memory batch instead of the shard stream."""
    real_next = adversarial.Streams.next
    adversarial.Streams.next = lambda self, device: ({k: v.to(device) for k, v in batch.items()}, len(batch["image"]))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = adversarial.train(make_cfg(args, tmp + "/run"))
            rows = [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
    finally:
        adversarial.Streams.next = real_next
    return rows[-1]["img/s"]  # the last log interval: steps/2 .. steps


def bare_rate(args, batch, freeze_d: bool = False) -> float:
    """The same training written as a plain PyTorch loop; with freeze_d, the generator step leaves D's
    weight gradients uncomputed, as the harness does (the same work, so the ratio is pure overhead)."""
    cfg = make_cfg(args, "unused")
    torch.manual_seed(cfg.run.seed)
    family = FAMILIES["dcgan"](cfg, load_info(cfg.data))
    G, D = family.nets["G"], family.nets["D"]
    # the optimizer the harness builds: fused Adam (train.fused_optim), so only the harness's overhead differs
    fused = cfg.train.fused_optim
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=(cfg.optim.beta1, cfg.optim.beta2), fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=(cfg.optim.beta1, cfg.optim.beta2), fused=fused)
    real, n = batch["image"], args.batch
    start = None
    for step in range(args.steps):
        if step == args.steps // 2:
            start = time.perf_counter()
        z = torch.randn(n, 100, 1, 1)
        with torch.no_grad():
            fake = G(z)
        real_logit, fake_logit = D(real)["adv"], D(fake)["adv"]
        loss_d = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                  + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(not freeze_d)
        fake_logit = D(G(torch.randn(n, 100, 1, 1)))["adv"]
        loss_g = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
    return n * (args.steps - args.steps // 2) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(args.batch, 1, 32, 32, generator=gen) * 2 - 1}
    harness, bare, same = [], [], []
    for r in range(args.rounds):
        harness.append(harness_rate(args, batch))
        bare.append(bare_rate(args, batch))
        same.append(bare_rate(args, batch, freeze_d=True))
        print(f"round {r + 1}: harness {harness[-1]:.1f} img/s, bare {bare[-1]:.1f} img/s (ratio "
              f"{harness[-1] / bare[-1]:.3f}), bare with frozen D in the G step {same[-1]:.1f} img/s (ratio "
              f"{harness[-1] / same[-1]:.3f})", flush=True)
    ratio = statistics.median(h / b for h, b in zip(harness, bare))
    finish("train_overhead", ratio, ratio_same_work=round(statistics.median(h / b for h, b in zip(harness, same)), 4),
           harness_img_s=statistics.median(harness), bare_img_s=round(statistics.median(bare), 2),
           bare_same_work_img_s=round(statistics.median(same), 2), steps=args.steps, batch=args.batch,
           width=args.width, rounds=args.rounds)

if __name__ == "__main__":
    main()
