"""The adversarial loop's sampling call sites on 2 real processes with a SyncBatchNorm generator, for
tests/test_sampling.py (as a multi-GPU run with train.sync_bn holds it; here on gloo CPU processes).

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/sample_ranks.py SHARDS WEIGHTS OUT

Rank 0 alone draws the sample grid (as the loop does), then every rank runs the loop's in-training
FID. Rank 0 writes OUT/result.json (the FID, the grid's bytes' digest, whether G's buffers changed)
and OUT/G.safetensors (the generator's weights, for the test's 1-process evaluation).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import save_file

from distgen.data import load_info
from distgen.families import FAMILIES
from distgen.loops.adversarial import evaluate_images
from distgen.recipes import load
from distgen.generation import generate, save_grid
from distgen.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

NUM_SAMPLES = 10


def main(shards: str, weights: str, out: str) -> None:
    acc = Accelerator()
    out = Path(out)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "dcgan_digits_smoke.yaml"
    cfg = load(recipe, [f"data.root={shards}", "model.z_dim=16", "model.width=8", f"eval.num_samples={NUM_SAMPLES}",
                        "eval.metrics=[fid]", f"eval.inception_weights={weights}"])
    set_seed(0)  # the same weights on both ranks
    family = FAMILIES["dcgan"](cfg, load_info(cfg.data))
    G = convert_sync_batchnorm(family.nets["G"])  # what convert_sync_bn does with several processes
    assert any(isinstance(m, SyncBatchNorm) for m in G.modules())
    buffers = [b.clone() for b in G.buffers()]
    grid = None
    if acc.is_main_process:  # the loop draws grids on the main process only
        inputs, cols = family.grid_inputs(cfg.run.seed)
        grid = save_grid(generate(family, G, inputs), out / "grid.png", cols)
    result = evaluate_images(family, cfg, acc, G)
    untouched = all(torch.equal(a, b) for a, b in zip(buffers, G.buffers()))
    if acc.is_main_process:
        save_file({k: v.contiguous() for k, v in G.state_dict().items()}, str(out / "G.safetensors"))
        (out / "result.json").write_text(json.dumps({
            "fid": result["fid"], "grid_sha256": hashlib.sha256(grid.read_bytes()).hexdigest(),
            "buffers_untouched": untouched, "world_size": acc.num_processes}))
    acc.wait_for_everyone()
    acc.end_training()


if __name__ == "__main__":
    main(*sys.argv[1:])
