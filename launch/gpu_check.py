"""Is this GPU machine ready for distgen? One command, one JSON line per check, under 8 minutes.

    make gpu-check                       # = python launch/gpu_check.py
    python launch/gpu_check.py --only train fid --families dcgan vae --jobs 4

Run it once on every new GPU machine, container or driver/PyTorch upgrade, before the first long run:

  train/<family>/<precision>  every GAN family and vae, dann a few steps (launch/train.py) in bf16 and
                              in fp16 (Accelerate's real GradScaler: GAN runs must log <net>/skipped),
                              and in bf16 with train.compile=inductor; losses finite at the last step
  fid                         a DCGAN run with an EMA draws a sample grid and measures an in-training
                              FID on random calibrated InceptionV3 weights (distgen.evaluation.random_weights:
                              the number means nothing, the pipeline runs); launch/evaluate.py on the
                              saved checkpoint must give the same FID
  resume                      8 steps straight against 4 steps + `--resume auto` to 8, deterministic
                              algorithms, TF32 off: the weights must be bit-identical
  cuda_graph/<family>         train.cuda_graph (the step captured as a CUDA graph) against the eager step
                              for the reports' GANs: same weights to float tolerance after 8 steps
  syncbn                      distgen's SyncBatchNorm (train.sync_bn) in a process group of one (NCCL;
                              gloo on the CPU): forward, input/weight gradients and running statistics
                              against torch's BatchNorm2d, in fp32 and bf16; no host read and exactly two
                              all_reduce calls per step, and on CUDA the step runs under
                              torch.cuda.set_sync_debug_mode("error")
  sync                        a DCGAN run whose every micro-batch (forward, backward, optimizer step)
                              runs under torch.cuda.set_sync_debug_mode("error"): a host sync in the
                              training step fails it (log and checkpoint boundaries sync on purpose)
  benchmark                   a short benchmarks/gpu.py grid (dcgan at batch 64, fp32 vs bf16), run
                              alone on the GPU after the other checks

Checks run in processes of their own (`--jobs` at once on the one GPU: the nets are tiny), on the
embedded digits shards written into a temporary folder (--workdir keeps it). Every line has
"check" and "ok"; the last line sums up, and the exit status is 1 if any check failed. Without
CUDA it says so in one line and exits 0 (`--device cpu` runs the same checks on tiny settings on
the CPU, a check of this script itself; no GradScaler or inductor there).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

GAN = {"acgan": "quickstart", "cgan": "cgan_digits_smoke", "cyclegan": "cyclegan_digits_smoke",
       "dcgan": "dcgan_digits_smoke", "lsgan": "lsgan_digits_smoke", "sagan": "sagan_digits_smoke",
       "stargan": "stargan_digits_smoke", "wgan_gp": "wgan_gp_digits_smoke"}
SINGLE = {"vae": "vae_digits_smoke", "dann": "dann_digits"}
CAPTURED = ("dcgan", "lsgan", "wgan_gp", "sagan", "acgan", "cgan")  # the reports' GANs: train.cuda_graph
STEPS = 4
# The single-objective loop under DeepSpeed is not here: DeepSpeed needs its own launcher and config
# (launch/deepspeed/); tests/test_cluster.py covers it on the CPU.


def data_overrides(family: str, data: Path) -> list[str]:
    digits, digits_m = data / "digits", data / "digits-m"
    if family == "cyclegan":
        return [f"data.domain_a={digits}", f"data.domain_b={digits_m}"]
    if family == "dann":
        return [f"data.source={digits}", f"data.target={digits_m}"]
    return [f"data.root={digits}"]


class Checker:
    def __init__(self, args, work: Path):
        self.args, self.work, self.cpu = args, work, args.device == "cpu"
        # ROOT first, and the caller's PYTHONPATH kept: packages carried there (a cluster module, a
        # --target install) must still import in the checks' processes
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": path,
                    "DISTGEN_CACHE_DIR": str(work / "cache")}
        if self.cpu:
            self.env["ACCELERATE_USE_CPU"] = "1"

    def run(self, cmd: list[str], precision: str = "no", timeout: int = 420, env: dict | None = None):
        env = {**self.env, "ACCELERATE_MIXED_PRECISION": precision, **(env or {})}
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def train(self, family: str, run_dir: Path, *extra: str, precision: str = "no", resume: bool = False,
              deterministic: bool = False, strict_sync: Path | None = None):
        recipe = ROOT / "recipes" / f"{(GAN | SINGLE)[family]}.yaml"
        if deterministic:  # cuDNN's autotuner off too (the loop sets cudnn.benchmark from the recipe): separate
            extra = (*extra, "train.cudnn_benchmark=false")  # processes timing kernels may pick other algorithms
        cmd = [sys.executable, "launch/train.py", str(recipe), *data_overrides(family, self.work / "data"),
               f"run.dir={run_dir}", f"train.steps={STEPS}", "log.every=2", f"log.sample_every={STEPS}",
               f"run.checkpoint_every={STEPS}", *extra] + (["--resume", "auto"] if resume else [])
        if deterministic:  # the loop has no switch for it: set it before launch/train.py runs
            cmd = [sys.executable, "-c", "import runpy, sys, torch; torch.use_deterministic_algorithms(True); "
                   "torch.backends.cudnn.benchmark = False; sys.argv = sys.argv[1:]; "
                   "runpy.run_path('launch/train.py', run_name='__main__')", *cmd[1:]]
        if strict_sync:  # the loop has no switch for it either: STRICT_SYNC wraps the stepper's micro-batches
            cmd = [sys.executable, "-c", STRICT_SYNC, str(strict_sync), *cmd[1:]]
        return self.run(cmd, precision, env={"CUBLAS_WORKSPACE_CONFIG": ":4096:8"} if deterministic else None)

    # -- the checks: each returns the fields of its JSON line ---------------------------------

    def check_train(self, family: str, precision: str, compile_: bool) -> dict:
        run_dir = self.work / "runs" / f"{family}-{precision}{'-compile' if compile_ else ''}"
        backend = "aot_eager" if self.cpu else "inductor"
        extra = [f"train.compile={backend}"] if compile_ else []
        if family in SINGLE:
            extra.append("eval.every=0")
        result = self.train(family, run_dir, *extra, precision=precision)
        if result.returncode != 0:
            return {"ok": False, "error": tail(result.stderr)}
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        last = [r for r in rows if r.get("step") == STEPS and not any(k.startswith("eval/") for k in r)][-1]
        losses = {k: v for k, v in last.items() if isinstance(v, (int, float)) and k not in ("step", "img/s")}
        ok = all(math.isfinite(v) for v in losses.values())
        out = {"ok": ok, "img/s": last.get("img/s"), "losses": {k: round(v, 4) for k, v in losses.items()}}
        if precision == "fp16" and family in GAN and not self.cpu:  # the GradScaler's own accounting
            out["grad_scaler"] = any(k.endswith("/skipped") for k in last)
            out["ok"] = ok and out["grad_scaler"]
        return out

    def check_fid(self) -> dict:
        from distgen.data import eval_batches, load_info, split_urls
        from distgen.config import DataConfig
        from distgen.evaluation.inception import to_uint8
        from distgen.evaluation.random_weights import make_random_weights

        import torch

        digits = self.work / "data" / ("digits-small-test" if self.cpu else "digits")
        info = load_info(DataConfig(root=str(digits)))
        real = next(eval_batches(split_urls(info, "train", "train"), 8, info))["image"]
        calibration = torch.cat([to_uint8(real).expand(-1, 3, -1, -1),
                                 torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)])
        weights = make_random_weights(self.work / "inception-random.pth", images=calibration)
        n = 40 if self.cpu else 1000  # 1000: two generator chunks of distgen.generation.CHUNK
        run_dir = self.work / "runs" / "fid"
        result = self.train("dcgan", run_dir, f"data.root={digits}", "train.ema_kimg=1", f"eval.every={STEPS}", f"eval.num_samples={n}",
                            "eval.metrics=[fid]", f"eval.inception_weights={weights}")
        if result.returncode != 0:
            return {"ok": False, "error": tail(result.stderr)}
        in_training = json.loads((run_dir / "eval" / f"step_{STEPS}.json").read_text())["fid"]
        grid = run_dir / "samples" / f"step_{STEPS}.png"
        ev = self.run([sys.executable, "launch/evaluate.py", str(run_dir), "--metrics", "fid", "--num-samples",
                       str(n), "--inception-weights", str(weights), "--no-cache"])
        if ev.returncode != 0:
            return {"ok": False, "error": tail(ev.stderr), "fid_in_training": in_training}
        offline = json.loads(ev.stdout.strip().splitlines()[-1])["fid"]
        same = abs(in_training - offline) <= 1e-3 * abs(offline)  # cuDNN may pick other kernels: not bitwise
        return {"ok": bool(same and grid.is_file() and math.isfinite(in_training)), "fid_in_training": in_training,
                "fid_evaluate_py": offline, "grid": grid.is_file()}

    def check_resume(self) -> dict:
        from safetensors.torch import load_file

        settings = ["train.tf32=false", "train.ema_kimg=1", f"run.checkpoint_every={STEPS // 2}"]
        straight, split = self.work / "runs" / "resume-straight", self.work / "runs" / "resume-split"
        a = self.train("dcgan", straight, *settings, deterministic=True)
        b1 = self.train("dcgan", split, *settings, f"train.steps={STEPS // 2}", deterministic=True)
        b2 = self.train("dcgan", split, *settings, resume=True, deterministic=True)
        for r in (a, b1, b2):
            if r.returncode != 0:
                return {"ok": False, "error": tail(r.stderr)}
        diff = 0.0
        files = sorted(p.name for p in (straight / "checkpoints" / f"step_{STEPS}").glob("*.safetensors"))
        for name in files:
            x = load_file(str(straight / "checkpoints" / f"step_{STEPS}" / name))
            y = load_file(str(split / "checkpoints" / f"step_{STEPS}" / name))
            diff = max([diff] + [(x[k].double() - y[k].double()).abs().max().item() for k in x])
        return {"ok": diff == 0.0 and bool(files), "max_abs_diff": diff, "files": files}

    def check_cuda_graph(self, family: str) -> dict:
        """train.cuda_graph against the eager step: the same recipe, seed and data, deterministic kernels,
        TF32 off; after warm-up, capture and replays the weights must match the eager run's to float
        tolerance (graph replays draw the same noise: CUDA graphs advance the generator as eager does).
        On the CPU: the run must refuse with the one-line reason."""
        from safetensors.torch import load_file

        steps = 8  # capture.WARMUP eager iterations, one capture, then replays
        settings = ["train.tf32=false", f"train.steps={steps}", f"run.checkpoint_every={steps}", "log.every=4"]
        graph_dir, eager_dir = (self.work / "runs" / f"cuda-graph-{family}{s}" for s in ("", "-eager"))
        g = self.train(family, graph_dir, *settings, "train.cuda_graph=true", deterministic=True)
        if self.cpu:
            refused = g.returncode != 0 and "train.cuda_graph needs CUDA" in g.stderr
            return {"ok": refused, "error": None if refused else tail(g.stderr)}
        e = self.train(family, eager_dir, *settings, deterministic=True)
        for r in (g, e):
            if r.returncode != 0:
                return {"ok": False, "error": tail(r.stderr)}
        worst, files = 0.0, sorted(p.name for p in (eager_dir / "checkpoints" / f"step_{steps}").glob("*.safetensors"))
        for name in files:
            x = load_file(str(eager_dir / "checkpoints" / f"step_{steps}" / name))
            y = load_file(str(graph_dir / "checkpoints" / f"step_{steps}" / name))
            for k in x:
                if x[k].is_floating_point():
                    scale = x[k].double().abs().max().item() or 1.0
                    worst = max(worst, (x[k].double() - y[k].double()).abs().max().item() / scale)
        rows = [json.loads(line) for line in (graph_dir / "metrics.jsonl").read_text().splitlines()]
        return {"ok": bool(files) and worst <= 1e-3, "max_rel_diff": worst, "files": files,
                "img/s_graph": rows[-1].get("img/s")}

    def check_syncbn(self) -> dict:
        return syncbn_check(self.args.device)

    def check_sync(self) -> dict:
        run_dir, count = self.work / "runs" / "sync", self.work / "strict_micro_batches.txt"
        result = self.train("dcgan", run_dir, strict_sync=count)
        if result.returncode != 0:
            return {"ok": False, "error": tail(result.stderr)}
        n = int(count.read_text()) if count.is_file() else 0
        # none counted: the wrapper no longer finds the step (the stepper changed), so nothing was checked
        return {"ok": n > 0, "strict_micro_batches": n, "cuda": not self.cpu}

    def check_benchmark(self) -> dict:
        cmd = [sys.executable, "benchmarks/gpu.py", "--families", "dcgan", "--batches", "64",
               "--precisions", "fp32", "bf16", "--channels-last", "0", "--compile", "0", "--steps", "20"]
        if self.cpu:
            cmd += ["--device", "cpu", "--width", "8", "--batches", "8", "--steps", "4"]
        result = self.run(cmd)
        if result.returncode != 0:
            return {"ok": False, "error": tail(result.stderr)}
        out = json.loads(result.stdout.strip().splitlines()[-1])
        return {"ok": out.get("measured") == out.get("configurations"), "result": out}


def syncbn_check(device: str) -> dict:
    """distgen.sync_batchnorm on `device` in a process group of one (its all_reduce changes nothing, its
    kernels all run) against torch's BatchNorm2d on the same batch. In-process: the group is this
    check's alone (the other checks run in processes of their own) and is torn down after."""
    import copy
    import socket

    import torch
    import torch.distributed as dist
    from torch.utils._python_dispatch import TorchDispatchMode

    from distgen.sync_batchnorm import convert_sync_batchnorm

    class Ops(TorchDispatchMode):  # host reads (.item(), boolean masks) and collectives, as they run
        def __init__(self):
            super().__init__()
            self.host_reads = self.all_reduces = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            self.host_reads += name in ("_local_scalar_dense", "nonzero")
            self.all_reduces += func.namespace == "c10d" and name == "allreduce_"
            return func(*args, **(kwargs or {}))

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.set_device(dev.index or 0)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            timeout=timedelta(seconds=120))
    try:
        warm = torch.zeros(1, device=dev)
        dist.all_reduce(warm)  # NCCL sets up its communicator at the first collective: outside the checked region
        if cuda:
            torch.cuda.synchronize()
        gen = torch.Generator().manual_seed(0)
        x = (torch.randn(16, 8, 12, 12, generator=gen) * 2 + 0.5).to(dev)
        dy = torch.randn(16, 8, 12, 12, generator=gen).to(dev)
        ref = torch.nn.BatchNorm2d(8).to(dev)
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.normal_()
        mine = convert_sync_batchnorm(copy.deepcopy(ref))
        results, ops = {}, Ops()
        for name, bn, dtype in (("torch", ref, torch.float32), ("distgen", mine, torch.float32),
                                ("distgen_bf16", copy.deepcopy(mine), torch.bfloat16)):
            xi = x.to(dtype).clone().requires_grad_(True)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error" if name != "torch" else 0)  # a host sync raises
            try:
                with ops if name == "distgen" else contextlib.nullcontext():
                    y = bn(xi)
                    (y * dy.to(dtype)).sum().backward()
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode(0)
            results[name] = [y.float(), xi.grad.float(), bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var]

        def worst(name):
            return max(((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()
                       for a, b in zip(results[name], results["torch"]))

        fp32, bf16 = worst("distgen"), worst("distgen_bf16")
        ok = fp32 < 1e-4 and bf16 < 5e-2 and ops.host_reads == 0 and ops.all_reduces == 2
        return {"ok": ok, "max_rel_diff_fp32": fp32, "max_rel_diff_bf16": bf16, "host_reads": ops.host_reads,
                "all_reduces_per_step": ops.all_reduces}
    finally:
        dist.destroy_process_group()
# `python -c STRICT_SYNC COUNT_FILE launch/train.py ...`: every Stepper.micro_batch (a micro-batch's data,
# forward, backward and optimizer step) runs with CUDA's sync debug mode at "error", so any host sync there
# raises; COUNT_FILE gets how many micro-batches ran that way (on a CPU the mode is not set, only counted).
STRICT_SYNC = """
import contextlib, runpy, sys, torch
from distgen.loops.stepper import Stepper
count_file, inner, n = sys.argv[1], Stepper.micro_batch, [0]
cuda = torch.cuda.is_available()
@contextlib.contextmanager
def strict(self, *args, **kwargs):
    with inner(self, *args, **kwargs):
        n[0] += 1
        if cuda:
            torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
Stepper.micro_batch = strict
end = Stepper.end_iteration
def strict_end(self):  # the guard's record and the statistics' device add, once per step
    if cuda:
        torch.cuda.set_sync_debug_mode("error")
    try:
        end(self)
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
Stepper.end_iteration = strict_end
sys.argv = sys.argv[2:]
try:
    runpy.run_path("launch/train.py", run_name="__main__")
finally:
    open(count_file, "w").write(str(n[0]))
"""


def tail(text: str, n: int = 1500) -> str:
    return text[-n:].strip()


def jobs(only: list[str], families: list[str]) -> list[tuple[str, tuple]]:
    out = []
    if "train" in only:
        for family in families:
            for precision in ("bf16", "fp16"):
                out.append((f"train/{family}/{precision}", ("check_train", family, precision, False)))
            out.append((f"train/{family}/bf16+compile", ("check_train", family, "bf16", True)))
    if "fid" in only:
        out.append(("fid", ("check_fid",)))
    if "resume" in only:
        out.append(("resume", ("check_resume",)))
    if "cuda_graph" in only:
        for family in [f for f in families if f in CAPTURED]:
            out.append((f"cuda_graph/{family}", ("check_cuda_graph", family)))
    if "syncbn" in only:
        out.append(("syncbn", ("check_syncbn",)))
    if "sync" in only:
        out.append(("sync", ("check_sync",)))
    return out


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    checks = ["train", "fid", "resume", "sync", "syncbn", "cuda_graph", "benchmark"]
    parser.add_argument("--only", nargs="+", default=checks, choices=checks)
    parser.add_argument("--families", nargs="+", default=[*GAN, *SINGLE], choices=[*GAN, *SINGLE],
                        help="families of the train checks (default: all)")
    parser.add_argument("--jobs", type=int, default=8, help="checks running at once on the GPU")
    parser.add_argument("--workdir", default="", help="keep the shards and run dirs here (default: a temp dir)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        emit({"check": "gpu-check", "ok": None, "skipped": "no CUDA device (torch.cuda.is_available() is False); "
              "run `make gpu-check` on the GPU machine"})
        return 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(args.workdir or tmp)
        from shards.__main__ import main as shards_main

        shard_sets = {"digits": ["digits"], "digits-m": ["digits-m"]}
        if args.device == "cpu":  # InceptionV3 on a CPU: a 20-image FID reference instead of 359
            shard_sets["digits-small-test"] = ["digits", "--test-fraction", "0.01"]
        for name, spec in shard_sets.items():
            if not (work / "data" / name / "index.json").is_file():
                shards_main([*spec, "--out", str(work / "data" / name)])
        checker = Checker(args, work)
        device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
        emit({"check": "device", "ok": True, "device": device, "torch": torch.__version__})
        failed = 0

        def one(name, spec):
            t0 = time.perf_counter()
            try:
                fields = getattr(checker, spec[0])(*spec[1:])
            except Exception as exc:  # a check that breaks is a failed check, and the others still run
                fields = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            return {"check": name, **fields, "seconds": round(time.perf_counter() - t0, 1)}

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(one, name, spec) for name, spec in jobs(args.only, args.families)]
            for future in as_completed(futures):
                line = future.result()
                failed += line["ok"] is False
                emit(line)
        if "benchmark" in args.only:  # alone on the GPU, so its timings are its own
            line = one("benchmark", ("check_benchmark",))
            failed += line["ok"] is False
            emit(line)
    emit({"check": "summary", "ok": failed == 0, "failed": failed,
          "seconds": round(time.perf_counter() - start, 1)})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
