"""Data-parallel scaling: DCGAN samples/s of 1, 2, 4 and 8 processes (gloo on CPU, NCCL on GPUs when present).

    python benchmarks/scaling.py [--processes 1 2 4 8] [--steps 60] [--batch 64] [--width 32] [--workers 0] [--threads 1]

Each run is a real `accelerate launch` of launch/train.py on the embedded digits with the same
per-process batch; samples/s is the img/s of its last log interval (all ranks together), and
per process that divided by the process count. Efficiency at P processes = (samples/s per process at
P) / (samples/s of 1 process): 1.0 is perfect scaling. With tiny nets (`--width 8`) a step is mostly
the all-reduce and the launch overhead: the communication-bound regime. On a machine with fewer cores
than processes the processes share the cores, so per-process figures fall with P for that reason too
(the JSON line records the cores). The ratio is the efficiency at the largest P. Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, digits_shards, finish  # noqa: E402


def samples_per_second(processes: int, args) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cuda = torch.cuda.is_available()
    # --threads per process (default 1 whatever P): every process does the same compute at every P, so
    # per-process figures differ only by the all-reduce and by sharing the cores
    threads = args.threads or max(1, (os.cpu_count() or 1) // processes)
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", str(processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(port), "--num_cpu_threads_per_process", str(threads)]
    launch += ["--multi_gpu"] if processes > 1 else ([] if cuda else ["--cpu"])
    env = {**os.environ, **({} if cuda else {"ACCELERATE_USE_CPU": "1"})}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*launch, "launch/train.py", "recipes/dcgan_digits_smoke.yaml", f"data.root={digits_shards()}",
                        f"model.width={args.width}", f"train.batch_size={args.batch}", f"train.steps={args.steps}",
                        f"log.every={args.steps // 2}", f"log.sample_every={10 ** 9}",
                        f"run.checkpoint_every={10 ** 9}", f"run.dir={tmp}/run", "eval.every=0",
                        f"data.num_workers={args.workers}"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        rows = [json.loads(line) for line in open(f"{tmp}/run/metrics.jsonl")]
    return rows[-1]["img/s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="data.num_workers per process (-1: auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (0: cores / processes)")
    args = parser.parse_args()
    total = {p: samples_per_second(p, args) for p in args.processes}
    per = {p: total[p] / p for p in args.processes}
    base = per.get(1)  # efficiencies are against one process
    efficiency = {p: round(per[p] / base, 3) for p in args.processes} if base else {}
    for p in args.processes:
        print(f"{p} process(es): {total[p]:.1f} samples/s, {per[p]:.1f} per process"
              + (f", efficiency {efficiency[p]:.2f}" if base else ""), flush=True)
    finish("scaling", efficiency.get(args.processes[-1]), samples_per_s={p: round(v, 1) for p, v in total.items()},
           samples_per_s_per_process={p: round(v, 1) for p, v in per.items()}, efficiency=efficiency,
           backend="nccl" if torch.cuda.is_available() else "gloo", steps=args.steps, batch_per_process=args.batch,
           width=args.width, workers=args.workers, threads=args.threads, cores=os.cpu_count(),
           load_average=round(os.getloadavg()[0], 1))


if __name__ == "__main__":
    main()
