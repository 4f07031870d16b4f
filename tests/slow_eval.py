"""launch/train.py with the in-training image evaluation made slow on rank 0, for tests/test_slow_eval.py:
rank 0 "computes the metrics" (sleeps SECONDS) while the other rank must wait without dying.

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/slow_eval.py SECONDS RECIPE [key=value ...]

The stand-in replaces distgen.evaluation.fidelity.evaluate_generator (rank 0 sleeps, then returns a fixed
FID; the others return {} at once, as the real one does once the features are gathered) and accepts any
eval.inception_weights path; everything else is the real loop.
"""
from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import distgen.evaluation.fidelity as fidelity  # noqa: E402
import distgen.evaluation.inception as inception  # noqa: E402

SECONDS = float(sys.argv.pop(1))


def slow_rank0(family, cfg, metrics, num_samples, weights=None, *, rank=0, **kwargs) -> dict:
    if rank != 0:
        return {}
    time.sleep(SECONDS)
    return {"fid": 1.0, "num_samples": num_samples}


fidelity.evaluate_generator = slow_rank0
inception.resolve_weights = lambda path, how="": Path(path)
sys.argv = [str(ROOT / "launch" / "train.py"), *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
