"""Benchmark: launch/evaluate.py's FID against torch-fidelity's calculate_metrics on the same images, one process.

    .venv/bin/python benchmarks/eval.py [--test-fraction 0.02] [--weights PATH]

Set-up (not timed): digits shards whose test split (the FID reference) has ~36 images, a 1-step
DCGAN smoke run, and InceptionV3 weights (--weights, $DISTGEN_INCEPTION_WEIGHTS, or a random,
BatchNorm-calibrated file: the same network, so the same time as the real weights).
Timed, one fresh process each, as a user runs them (wall time and the child's CPU time):
  ours     python launch/evaluate.py RUN --metrics fid --num-samples N --no-cache
           (generate N images, extract them and the reference split, FID), also writing the PNGs
  theirs   torch_fidelity.calculate_metrics(input1=SAMPLES, input2=REFERENCE, fid=True, cuda=False)
           on those PNGs: with its defaults (4 DataLoader workers, all BLAS threads), and tuned the
           way evaluate.py runs (save_cpu_ram=True: no worker processes; one BLAS thread)
ratio = ours / the faster torch-fidelity run (wall); ratio_cpu the same in CPU time, which other
load on the machine moves less. The FIDs must agree (relative 1e-4). Last line: one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, finish  # noqa: E402

THEIRS = """
import json, sys, torch_fidelity
from threadpoolctl import threadpool_limits
tuned = sys.argv[4] == "1"
with threadpool_limits(limits=1 if tuned else None, user_api="blas"):
    out = torch_fidelity.calculate_metrics(input1=sys.argv[1], input2=sys.argv[2], fid=True, cuda=False,
                                           verbose=False, feature_extractor_weights_path=sys.argv[3],
                                           save_cpu_ram=tuned)
print(json.dumps(out))
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], env: dict) -> tuple[float, float, dict]:
    """(wall s, CPU s of the process and its children, last JSON line it printed)."""
    start, cpu = time.perf_counter(), children_cpu()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{result.stderr[-3000:]}")
    return wall, cpu, json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-fraction", type=float, default=0.02, help="size of the reference split")
    parser.add_argument("--weights", default=os.environ.get("DISTGEN_INCEPTION_WEIGHTS", ""))
    args = parser.parse_args()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled"}
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, run_dir = tmp / "digits", tmp / "run"
        subprocess.run([py, "-m", "shards", "digits", "--out", str(data), "--test-fraction", str(args.test_fraction)],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        n = json.loads((data / "index.json").read_text())["splits"]["test"]["count"]
        subprocess.run([py, "launch/train.py", "recipes/dcgan_digits_smoke.yaml", f"data.root={data}",
                        f"run.dir={run_dir}", "train.steps=1", "run.checkpoint_every=1"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        weights = args.weights
        if not weights:
            from distgen.evaluation.random_weights import make_random_weights

            weights = str(make_random_weights(tmp / "inception-random.pth"))
        samples, reference = tmp / "samples", tmp / "reference"
        ours = timed([py, "launch/evaluate.py", str(run_dir), "--metrics", "fid", "--num-samples", str(n),
                      "--no-cache", "--inception-weights", weights, "--save-samples", str(samples),
                      "--save-reference", str(reference)], env)
        default = timed([py, "-c", THEIRS, str(samples), str(reference), weights, "0"], env)
        tuned = timed([py, "-c", THEIRS, str(samples), str(reference), weights, "1"], env)
    fid = default[2]["frechet_inception_distance"]
    agree = all(abs(x - fid) <= 1e-4 * abs(fid) for x in (ours[2]["fid"], tuned[2]["frechet_inception_distance"]))
    faster = min(default, tuned, key=lambda t: t[0])
    print(f"{n} generated + {n} real images, 1 process; load average {os.getloadavg()[0]:.1f}")
    for name, (wall, cpu, _) in (("launch/evaluate.py --metrics fid", ours), ("calculate_metrics (defaults)", default),
                                 ("calculate_metrics (tuned)", tuned)):
        print(f"  {name:34s} {wall:7.2f} s wall  {cpu:7.2f} s CPU")
    print(f"  ours / faster torch-fidelity: {ours[0] / faster[0]:.3f} wall, {ours[1] / faster[1]:.3f} CPU; "
          f"FIDs agree: {agree} ({ours[2]['fid']:.7g} vs {fid:.7g})")
    finish("eval", ours[0] / faster[0], ratio_cpu=round(ours[1] / faster[1], 4), ours_s=round(ours[0], 2),
           torch_fidelity_s=round(default[0], 2), torch_fidelity_tuned_s=round(tuned[0], 2),
           ours_cpu_s=round(ours[1], 2), torch_fidelity_cpu_s=round(default[1], 2),
           torch_fidelity_tuned_cpu_s=round(tuned[1], 2), images=2 * n, fid_agree=agree,
           load_average=round(os.getloadavg()[0], 1))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
