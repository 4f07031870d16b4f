"""The DeepSpeed engine settings a recipe gets through distgen's make_accelerator, for tests/test_deepspeed_configs.py.

    accelerate launch --config_file launch/deepspeed/zero1.yaml tests/deepspeed_effective.py GRAD_ACCUM

Prepares a one-layer model with the loops' Accelerator and prints, as one JSON line, what the
DeepSpeed engine will do: its gradient clipping and accumulation, and Accelerate's accumulation.
"""
from __future__ import annotations

import json
import sys

import torch

from distgen.loops.common import make_accelerator
from distgen.recipes import from_dict


def main(grad_accum: str) -> None:
    cfg = from_dict({"family": "classifier", "train": {"batch_size": 4, "grad_accum": int(grad_accum)}})
    acc = make_accelerator(cfg, style="single")
    model = torch.nn.Linear(2, 2)
    engine, _ = acc.prepare(model, torch.optim.Adam(model.parameters()))
    print(json.dumps({"gradient_clipping": engine.gradient_clipping(),
                      "gradient_accumulation_steps": engine.gradient_accumulation_steps(),
                      "accelerate_accumulation": acc.gradient_accumulation_steps}), flush=True)
    acc.end_training()


if __name__ == "__main__":
    main(*sys.argv[1:])
