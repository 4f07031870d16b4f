"""Data-parallel scaling: DCGAN samples/s of 1 and 2 processes (gloo on CPU, NCCL on GPUs when present).

    python benchmarks/scaling.py [--steps 60] [--batch 64] [--width 32]

Each run is a real `accelerate launch` of launch/train.py on the embedded digits with the same
per-process batch; samples/s is the img/s of its last log interval (all ranks together). The ratio
is 2-process / 1-process samples/s (2.0 would be perfect scaling; on a 2-core CPU the two
processes share the cores one process used, so about 1.0 is the honest expectation there).
Ends with one JSON line.
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
    threads = max(1, (os.cpu_count() or 1) // processes)
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", str(processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(port), "--num_cpu_threads_per_process", str(threads)]
    launch += ["--multi_gpu"] if processes > 1 else ([] if cuda else ["--cpu"])
    env = {**os.environ, **({} if cuda else {"ACCELERATE_USE_CPU": "1"})}
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([*launch, "launch/train.py", "recipes/dcgan_digits_smoke.yaml", f"data.root={digits_shards()}",
                        f"model.width={args.width}", f"train.batch_size={args.batch}", f"train.steps={args.steps}",
                        f"log.every={args.steps // 2}", f"log.sample_every={10 ** 9}",
                        f"run.checkpoint_every={10 ** 9}", f"run.dir={tmp}/run"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        rows = [json.loads(line) for line in open(f"{tmp}/run/metrics.jsonl")]
    return rows[-1]["img/s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=32)
    args = parser.parse_args()
    one = samples_per_second(1, args)
    two = samples_per_second(2, args)
    print(f"1 process: {one:.1f} samples/s, 2 processes: {two:.1f} samples/s", flush=True)
    finish("scaling", two / one, one_process=one, two_processes=two, backend="nccl" if torch.cuda.is_available()
           else "gloo", steps=args.steps, batch_per_process=args.batch)


if __name__ == "__main__":
    main()
