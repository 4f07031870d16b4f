"""GPU throughput of the GAN recipes: images/s and model FLOP utilisation (MFU) of dcgan, wgan_gp and
sagan at 64x64, over batch size, precision, channels_last and torch.compile. CUDA only.

    python benchmarks/gpu.py                                   # the full grid (72 configurations)
    python benchmarks/gpu.py --families wgan_gp --batches 256 --precisions bf16 --compile 0 1

Every configuration runs the harness's own adversarial loop (distgen.loops.adversarial.train, the
code launch/train.py runs) on the recipe's nets (recipes/dcgan_celeba.yaml, wgan_gp.yaml,
sagan_celeba.yaml: width 64, 64x64 RGB) in a process of its own, so CUDA memory, compile caches and
Accelerate's process-wide state start fresh each time. The input pipeline is left out: one fixed
batch already on the GPU stands in for the shard stream (benchmarks/loader.py measures the stream).
Precision is chosen the way `accelerate launch --mixed_precision` does (ACCELERATE_MIXED_PRECISION);
fp32 runs with the recipes' train.tf32 on. torch.compile leaves the gradient-penalty critic eager
(family.EAGER), as training does.

images/s: real images the loop consumed per second over the second half of the run (the loop's own
img/s; wgan_gp takes 5 critic batches per generator step). FLOPs per generator step are counted with
torch.utils.flop_counter.FlopCounterMode on the same loop, eager fp32, as the difference between a
2k- and a k-step run (set-up and the final sample grid cancel); MFU = FLOPs/s over the device's
dense peak for the precision (tf32 for fp32; --peak-tflops to override). Ratios are each
configuration's images/s over the plain one (fp32, no channels_last, no compile) of the same family
and batch. Ends with one JSON line; its "best" names the fastest settings per family and batch.

Against a bare loop (--bare 1): every configuration also runs the same training written by hand on the
same nets (benchmarks/bare_loops.py; captured as a CUDA graph when the configuration is), and the row's
"vs_bare" is harness img/s over bare img/s (compile rows: over the eager bare loop). --captured 1 adds
train.cuda_graph configurations. `make gpu-bench` is the issue-sized grid: dcgan, wgan_gp and sagan at
batch 64 and 256, fp32 and bf16, eager / compile / captured, harness and bare, inside --budget-s seconds
(configurations left over are listed as skipped, compile ones last).

Without CUDA it says so and stops, unless --device cpu is given (a check of the script itself on
tiny nets: tests/test_benchmarks.py).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import ROOT, digits_shards, finish, machine  # noqa: E402

RECIPES = {"dcgan": "dcgan_celeba", "wgan_gp": "wgan_gp", "sagan": "sagan_celeba"}
ACCELERATE_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
# Dense (no sparsity) peak TFLOP/s from the vendors' data sheets; fp32 means TF32 tensor cores.
PEAKS = {"H200": {"fp32": 494.7, "bf16": 989.4, "fp16": 989.4},
         "H100": {"fp32": 494.7, "bf16": 989.4, "fp16": 989.4},  # SXM; the PCIe card is ~25% lower
         "A100": {"fp32": 156.0, "bf16": 312.0, "fp16": 312.0},
         "L4": {"fp32": 60.0, "bf16": 121.0, "fp16": 121.0}}


def config_for(family: str, batch: int, steps: int, device: str, width: int, channels_last: bool, compile_: bool,
               captured: bool = False):
    """The recipe, fed from the digits shards' index (resized to 64x64 RGB) only so the loop can open
    its stream; the batches themselves come from memory."""
    from distgen import recipes

    return recipes.load(ROOT / "recipes" / f"{RECIPES[family]}.yaml", [
        f"data.root={digits_shards()}", "data.image_size=64", "data.channels=3", "data.num_workers=0",
        f"model.width={width}", f"train.batch_size={batch}", f"train.steps={steps}",
        f"log.every={max(steps // 2, 1)}", f"log.sample_every={10 ** 9}", f"run.checkpoint_every={10 ** 9}",
        "eval.every=0", f"train.channels_last={str(bool(channels_last)).lower()}",
        f"train.compile={'inductor' if compile_ else ''}", f"train.cuda_graph={str(bool(captured)).lower()}",
        "run.dir=unused"])


def run_loop(cfg, device: str) -> list[dict]:
    """distgen's adversarial loop with one in-memory batch in place of the shard stream; metrics rows."""
    from dataclasses import replace

    from distgen.loops import adversarial

    gen = torch.Generator().manual_seed(0)
    n, size = cfg.train.batch_size, cfg.data.image_size
    batch = {"image": (torch.rand(n, 3, size, size, generator=gen) * 2 - 1).to(device)}
    if cfg.train.channels_last:
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    real_open, real_next = adversarial.Streams.open, adversarial.Streams.next
    adversarial.Streams.open = lambda self, acc, start_batch: None
    adversarial.Streams.next = lambda self, dev: (batch, n)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = adversarial.train(replace(cfg, run=replace(cfg.run, dir=f"{tmp}/run")))
            return [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]
    finally:
        adversarial.Streams.open, adversarial.Streams.next = real_open, real_next


class FlopCount(TorchDispatchMode):
    """Total FLOPs of the matmuls/convolutions dispatched, by torch.utils.flop_counter's own formulas.
    Hand-written around them because FlopCounterMode's module tracker breaks torch.autograd.grad,
    which the WGAN-GP gradient penalty calls."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def flops_per_step(args, family: str, batch: int) -> float:
    """FLOPs of one generator step (all its phases), eager fp32: a 2k-step run minus a k-step run."""
    counts = []
    for steps in (args.flop_steps, 2 * args.flop_steps):
        with FlopCount() as counter:
            run_loop(config_for(family, batch, steps, args.device, args.width, False, False), args.device)
        counts.append(counter.total)
    return (counts[1] - counts[0]) / args.flop_steps


def worker(args) -> None:
    """One configuration in this process; prints one JSON line."""
    os.environ["ACCELERATE_MIXED_PRECISION"] = ACCELERATE_PRECISION[args.precision]
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"
    if args.flops:
        print(json.dumps({"flops": flops_per_step(args, args.family, args.batch)}))
        return
    cfg = config_for(args.family, args.batch, args.steps, args.device, args.width, args.channels_last,
                     args.compile, args.captured)
    rows = [r for r in run_loop(cfg, args.device) if "img/s" in r]
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if args.device == "cuda" else 0.0
    out = {"img_s": rows[-1]["img/s"], "steps_s": rows[-1]["img/s"] / images_per_step(cfg),
           "peak_mem_gib": round(peak, 2)}
    if args.bare and not args.compile:  # the hand-written loop on the same nets, in the same process
        from benchmarks.bare_loops import bare_rate

        gen = torch.Generator().manual_seed(0)
        real = (torch.rand(cfg.train.batch_size, 3, cfg.data.image_size, cfg.data.image_size, generator=gen) * 2
                - 1).to(args.device)
        if cfg.train.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        out["bare_img_s"] = round(bare_rate(cfg, args.device, args.precision, real, captured=bool(args.captured)), 2)
        out["vs_bare"] = round(out["img_s"] / out["bare_img_s"], 4)
    print(json.dumps(out))


def images_per_step(cfg) -> int:
    """Real images one generator step consumes (every D phase repeat takes a batch)."""
    from distgen.recipes import family_class
    from distgen.loops.adversarial import phases_of

    family_cls = family_class(cfg.family)
    phases = [p for p in phases_of(cfg, family_cls) if p.spec.uses_data]
    # a phase with `every` k runs on one step in k; each optimizer step takes grad_accum micro-batches
    return cfg.train.batch_size * cfg.train.grad_accum * sum(p.repeat / p.every for p in phases)


def child(args, **fields) -> dict:
    """Run one configuration (or a FLOP count) in a fresh process; its JSON line."""
    cmd = [sys.executable, __file__, "--worker", "--device", args.device, "--steps", str(args.steps),
           "--width", str(args.width), "--flop-steps", str(args.flop_steps)]
    for key, value in fields.items():
        cmd += [f"--{key.replace('_', '-')}", str(int(value) if isinstance(value, bool) else value)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.child_timeout_s or None)
    except subprocess.TimeoutExpired:  # one hung or slow configuration must not take the whole grid's time
        return {"error": f"timed out after {args.child_timeout_s:g} s (--child-timeout-s)"}
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_tflops(args, precision: str) -> float:
    if args.peak_tflops:
        return args.peak_tflops
    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    for key, peaks in PEAKS.items():
        if key in name:
            return peaks[precision]
    return math.nan  # unknown device: no MFU (give --peak-tflops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=list(ACCELERATE_PRECISION))
    parser.add_argument("--channels-last", nargs="+", type=int, default=[0, 1], choices=[0, 1], dest="channels_last_")
    parser.add_argument("--compile", nargs="+", type=int, default=[0, 1], choices=[0, 1], dest="compile_")
    parser.add_argument("--captured", nargs="+", type=int, default=[0], choices=[0, 1], dest="captured_",
                        help="1: train.cuda_graph configurations too (the step captured as a CUDA graph)")
    parser.add_argument("--bare", type=int, default=0, choices=[0, 1], help="1: also time a hand-written loop")
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="stop starting configurations after this many seconds (0 = no limit)")
    parser.add_argument("--child-timeout-s", type=float, default=180.0,
                        help="give up on one configuration after this many seconds (0 = no limit)")
    parser.add_argument("--steps", type=int, default=60, help="generator steps per configuration (timed: the second half)")
    parser.add_argument("--flop-steps", type=int, default=2)
    parser.add_argument("--width", type=int, default=64, help="the recipes' width; smaller only for a quick check")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: known GPUs)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    # one configuration in a child process (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--flops", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--channels-last-one", type=int, default=0, dest="channels_last", help=argparse.SUPPRESS)
    parser.add_argument("--compile-one", type=int, default=0, dest="compile", help=argparse.SUPPRESS)
    parser.add_argument("--captured-one", type=int, default=0, dest="captured", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py measures CUDA GPUs and this machine has none; nothing measured "
              "(--device cpu checks the script itself)")
        print(json.dumps({"benchmark": "gpu", "ratio": None, "skipped": "no CUDA device", "machine": machine()}))
        return

    clock = time.perf_counter()
    results, best, gains, skipped, flops_of = [], {}, [], [], {}
    modes = [(comp, cap) for comp in args.compile_ for cap in args.captured_ if not (comp and cap)]
    modes.sort(key=lambda m: m[0])  # compile last: it is the slowest to start
    grid = [(mode, family, batch, precision, cl) for mode in modes for family in args.families
            for batch in args.batches for precision in args.precisions for cl in args.channels_last_]
    for (comp, cap), family, batch, precision, cl in grid:
        if args.budget_s and time.perf_counter() - clock > args.budget_s:
            skipped.append(f"{family}/{batch}/{precision}/channels_last={cl}/{_mode(comp, cap)}")
            continue
        key = f"{family}/{batch}"
        if key not in flops_of:
            flops = child(args, flops=1, family=family, batch=batch)
            if "error" in flops:
                print(f"{family} batch {batch}: FLOP count failed ({flops['error']}); no MFU", flush=True)
            flops_of[key] = flops.get("flops", math.nan)
        flops = flops_of[key]
        r = child(args, family=family, batch=batch, precision=precision, channels_last_one=cl, compile_one=comp,
                  captured_one=cap, bare=args.bare)
        row = {"family": family, "batch": batch, "precision": precision, "channels_last": bool(cl),
               "compile": bool(comp), "captured": bool(cap), "mode": _mode(comp, cap),
               "flops_per_step": flops if math.isfinite(flops) else None, **r}
        if "img_s" in r:
            mfu = flops * r["steps_s"] / (peak_tflops(args, precision) * 1e12)
            row["mfu"] = round(mfu, 4) if math.isfinite(mfu) else None
            if key not in best or r["img_s"] > best[key]["img_s"]:
                best[key] = {k: row[k] for k in ("precision", "channels_last", "compile", "captured", "img_s", "mfu")}
        results.append(row)
        print(f"{family:8s} batch {batch:4d} {precision:5s} channels_last={cl} {row['mode']:8s}: "
              + (f"{r['img_s']:9.1f} img/s  MFU {row['mfu']}" + (f"  vs bare {r['vs_bare']}" if "vs_bare" in r else "")
                 if "img_s" in r else f"failed: {r['error']}"), flush=True)
    # ratios against the plain configuration (fp32, NCHW, eager) of the same family and batch; compile rows
    # against the eager bare loop of their precision
    for key in {(r["family"], r["batch"]) for r in results}:
        rows = [r for r in results if (r["family"], r["batch"]) == key]
        plain = next((r["img_s"] for r in rows if "img_s" in r and (r["precision"], r["channels_last"], r["mode"])
                      == ("fp32", False, "eager")), None)
        for row in rows:
            row["ratio"] = round(row["img_s"] / plain, 3) if plain and "img_s" in row else None
            if row["compile"] and "img_s" in row:
                bare = next((r.get("bare_img_s") for r in rows if r["mode"] == "eager" and r["precision"] ==
                             row["precision"] and r["channels_last"] == row["channels_last"]), None)
                if bare:
                    row["bare_img_s"], row["vs_bare"] = bare, round(row["img_s"] / bare, 4)
        name = f"{key[0]}/{key[1]}"
        if plain and name in best:
            gains.append(best[name]["img_s"] / plain)
    # ratio: the best configuration over the plain one, geometric mean over families and batches
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda,
                "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else args.device}
    finish("gpu", math.exp(sum(map(math.log, gains)) / len(gains)) if gains else None, best=best,
           results=results, configurations=len(grid), measured=sum("img_s" in r for r in results),
           skipped=skipped, wall_s=round(time.perf_counter() - clock, 1), **versions)


def _mode(compile_: int, captured: int) -> str:
    return "compile" if compile_ else "captured" if captured else "eager"


if __name__ == "__main__":
    main()
