"""Harness overhead: the DCGAN step rate of distgen's adversarial loop against a bare PyTorch loop
with the same nets, batch, optimizers and in-memory data, measured side by side in one run.

    python benchmarks/train_overhead.py [--steps 160] [--rounds 3] [--batch 64] [--width 32]

Both loops train the same fresh DCGAN (same seed) on one fixed in-memory batch, interleaved: each
round is one harness run in which every iteration is followed by one iteration of each bare loop, so
all three see the same machine from moment to moment (timed one after the other, rounds of a few
seconds swung by +-20% on a shared 2-core VM, more than the overhead measured). Timed over the
second half (after warm-up); the ratio is the median over rounds of harness img/s / bare img/s
(>= 0.95 is the goal). The usual bare loop also computes D's weight gradients in the generator step,
which the harness skips; `ratio_same_work` compares against a bare loop that skips them too
(D.requires_grad_(False)), i.e. the harness's pure overhead. Ends with one JSON line.

It also counts the aten ops each loop dispatches per D+G iteration (`ops_per_iteration`, a
TorchDispatchMode over the whole run, tiny nets: width 4, batch 8, data.cache=ram, at two run lengths
so set-up, the final log and the checkpoint cancel), fp32 and bf16, for the harness (launch/train.py's
adversarial loop) and a bare loop on the same nets, data stream and fused Adam (bf16: one autocast per
phase). On a GPU that waits on the host every dispatched op costs about one launch, so the ratio of the
counts is the harness's overhead there (goal: <= 1.05; tests/test_lean_step.py fails above it).

    python benchmarks/train_overhead.py --ops-only      # just the counts (seconds)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import os
from collections import Counter
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import ROOT, digits_shards, finish  # noqa: E402
from distgen import recipes
from distgen.data import load_info, split_urls, to_device, train_loader
from distgen.families import FAMILIES
from distgen.loops import adversarial


def make_cfg(args, run_dir: str):
    return recipes.load(ROOT / "recipes" / "dcgan_digits_smoke.yaml", [
        f"data.root={digits_shards()}", f"model.width={args.width}", "model.z_dim=100",
        f"train.batch_size={args.batch}", f"train.steps={args.steps}", f"log.every={args.steps // 2}",
        f"log.sample_every={10 ** 9}", f"run.checkpoint_every={10 ** 9}", f"run.dir={run_dir}"])


class BareLoop:
    """The same training written as a plain PyTorch loop, one D+G iteration per call; with freeze_d, the
    generator step leaves D's weight gradients uncomputed, as the harness does (the same work, so the
    ratio is pure overhead)."""

    def __init__(self, args, batch, freeze_d: bool = False):
        cfg = make_cfg(args, "unused")
        torch.manual_seed(cfg.run.seed)
        family = FAMILIES["dcgan"](cfg, load_info(cfg.data))
        self.G, self.D = family.nets["G"], family.nets["D"]
        # the optimizer the harness builds: fused Adam (train.fused_optim), so only the harness's overhead differs
        fused, betas = cfg.train.fused_optim, (cfg.optim.beta1, cfg.optim.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.optim.lr_g, betas=betas, fused=fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.optim.lr_d, betas=betas, fused=fused)
        self.real, self.n, self.freeze_d = batch["image"], args.batch, freeze_d

    def iteration(self) -> None:
        G, D, n = self.G, self.D, self.n
        z = torch.randn(n, 100, 1, 1)
        with torch.no_grad():
            fake = G(z)
        real_logit, fake_logit = D(self.real)["adv"], D(fake)["adv"]
        loss_d = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                  + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        D.requires_grad_(not self.freeze_d)
        fake_logit = D(G(torch.randn(n, 100, 1, 1)))["adv"]
        loss_g = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        D.requires_grad_(True)


def interleaved_round(args, batch) -> dict[str, float]:
    """img/s of the harness, the bare loop and the same-work bare loop, measured interleaved: one harness
    run (launch/train.py's adversarial loop, fed the in-memory batch instead of the shard stream) in which
    every iteration is followed by one iteration of each bare loop, run from the harness's batch fetch.
    The harness's time is the span from one fetch's return to the next fetch: its whole iteration, both
    phases and its bookkeeping, without the bare loops. Timed over the second half (after warm-up),
    without the iterations that log or checkpoint (the spans end before the last one)."""
    loops = {"bare": BareLoop(args, batch), "same": BareLoop(args, batch, freeze_d=True)}
    spent = dict.fromkeys(("harness", *loops), 0.0)
    calls, resumed, timed = 0, 0.0, 0
    real_next = adversarial.Streams.next

    def next_batch(self, device):
        nonlocal calls, resumed, timed
        now = time.perf_counter()
        counting = calls > args.steps // 2
        if counting:  # the harness iteration that ended here (it began when the previous fetch returned)
            spent["harness"] += now - resumed
            timed += 1
        order = list(loops) if calls % 2 else list(loops)[::-1]  # alternate which bare loop runs first
        for name in order:
            start = time.perf_counter()
            loops[name].iteration()
            if counting:
                spent[name] += time.perf_counter() - start
        calls += 1
        out = {k: v.to(device) for k, v in batch.items()}, len(batch["image"])
        resumed = time.perf_counter()
        return out

    adversarial.Streams.next = next_batch
    try:
        with tempfile.TemporaryDirectory() as tmp:
            adversarial.train(make_cfg(args, tmp + "/run"))
    finally:
        adversarial.Streams.next = real_next
    return {"iterations": timed, **{name: args.batch * timed / seconds for name, seconds in spent.items()}}


class OpCount(TorchDispatchMode):
    """Every aten op dispatched while active, by name."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def ops_config(steps: int, run_dir: str, recipe: str = "dcgan_digits_smoke"):
    return recipes.load(ROOT / "recipes" / f"{recipe}.yaml", [
        f"data.root={digits_shards()}", "model.width=4", "train.batch_size=8", "data.cache=ram",
        f"train.steps={steps}", f"log.every={steps}", f"log.sample_every={10 ** 9}",
        f"run.checkpoint_every={10 ** 9}", f"run.dir={run_dir}", "eval.every=0"])


def harness_ops(steps: int, precision: str) -> Counter:
    """aten ops of a whole harness run of `steps` D+G iterations (the adversarial loop, in this process)."""
    from accelerate.state import AcceleratorState, GradientState

    os.environ["ACCELERATE_MIXED_PRECISION"] = precision
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = ops_config(steps, tmp + "/run")
            with OpCount() as count:
                adversarial.train(cfg)
    finally:
        os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    return count.ops


def bare_ops(steps: int, precision: str) -> Counter:
    """aten ops of the same training written by hand: the harness's nets, data stream and fused Adam,
    BCE losses, D frozen in the G step (the harness computes no D weight gradients there either),
    one autocast per phase under bf16."""
    cfg = ops_config(steps, "unused")
    info = load_info(cfg.data)
    with OpCount() as count:
        torch.manual_seed(cfg.run.seed)
        family = FAMILIES["dcgan"](cfg, info)
        G, D = family.nets["G"], family.nets["D"]
        betas = (cfg.optim.beta1, cfg.optim.beta2)
        opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=betas, fused=True)
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=betas, fused=True)
        stream = iter(train_loader(split_urls(info, "train", "data.train_split"), cfg.train.batch_size, info,
                                   cfg.data, cfg.run.seed, 0, 1))
        z_dim, n = cfg.model.z_dim, cfg.train.batch_size
        autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
        for _ in range(steps):
            real = to_device(next(stream), "cpu")["image"]  # uint8 -> [-1, 1], as the harness does
            with autocast():
                with torch.no_grad():
                    fake = G(torch.randn(n, z_dim, 1, 1))
                real_logit, fake_logit = D(real)["adv"].float(), D(fake)["adv"].float()
                loss_d = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                          + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
            loss_d.backward()
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
            D.requires_grad_(False)
            with autocast():
                fake_logit = D(G(torch.randn(n, z_dim, 1, 1)))["adv"].float()
                loss_g = F.binary_cross_entropy_with_logits(fake_logit, torch.ones_like(fake_logit))
            loss_g.backward()
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            D.requires_grad_(True)
    return count.ops


def ops_per_iteration(precision: str = "no", steps: int = 10) -> dict:
    """Ops per D+G iteration of the harness and the bare loop: (run of 2k steps - run of k steps) / k."""
    out = {}
    for name, fn in (("harness", harness_ops), ("bare", bare_ops)):
        short, long = fn(steps, precision), fn(2 * steps, precision)
        per = {op: (long[op] - short[op]) / steps for op in long if long[op] != short[op]}
        out[name] = {"ops": sum(long.values()) / steps - sum(short.values()) / steps,
                     "by_op": dict(sorted(per.items(), key=lambda kv: -kv[1]))}
    out["ratio"] = out["harness"]["ops"] / out["bare"]["ops"]
    return out


def op_counts() -> dict:
    """The op-count comparison in fp32 and bf16, as the JSON line reports it."""
    fields = {}
    for precision, label in (("no", "fp32"), ("bf16", "bf16")):
        r = ops_per_iteration(precision)
        fields[f"ops_{label}"] = {"harness": round(r["harness"]["ops"], 2), "bare": round(r["bare"]["ops"], 2),
                                  "ratio": round(r["ratio"], 4)}
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--ops-only", action="store_true", help="only count ops per iteration (fp32, bf16)")
    args = parser.parse_args()
    ops = op_counts()
    if args.ops_only:
        finish("train_overhead_ops", max(v["ratio"] for v in ops.values()), **ops)
        return
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(args.batch, 1, 32, 32, generator=gen) * 2 - 1}
    harness, bare, same = [], [], []
    for r in range(args.rounds):
        rates = interleaved_round(args, batch)
        harness.append(rates["harness"])
        bare.append(rates["bare"])
        same.append(rates["same"])
        print(f"round {r + 1}: harness {harness[-1]:.1f} img/s, bare {bare[-1]:.1f} img/s (ratio "
              f"{harness[-1] / bare[-1]:.3f}), bare with frozen D in the G step {same[-1]:.1f} img/s (ratio "
              f"{harness[-1] / same[-1]:.3f})", flush=True)
    ratio = statistics.median(h / b for h, b in zip(harness, bare))
    finish("train_overhead", ratio, ratio_same_work=round(statistics.median(h / b for h, b in zip(harness, same)), 4),
           harness_img_s=round(statistics.median(harness), 2), bare_img_s=round(statistics.median(bare), 2),
           bare_same_work_img_s=round(statistics.median(same), 2), steps=args.steps, batch=args.batch,
           width=args.width, rounds=args.rounds, method="interleaved", **ops)


if __name__ == "__main__":
    main()
