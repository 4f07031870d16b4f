"""Runs launch/train.py and records the dtypes its convolutions computed in, for the mixed-precision test
(never imported by distgen):

    accelerate launch --mixed_precision bf16 tests/precision_probe.py OUT.json recipes/X.yaml key=value ...

OUT.json: {"conv_output_dtypes": [...]} over every Conv2d / ConvTranspose2d forward of the run (training
steps and sample grids), from a global forward hook: what autocast actually did, not what was asked for."""
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "launch"))
import train  # noqa: E402

out, argv = Path(sys.argv[1]), sys.argv[2:]
seen: set[str] = set()


def record(module, inputs, output):
    if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d) and torch.is_grad_enabled():
        seen.add(str(output.dtype).removeprefix("torch."))  # training forwards (sampling runs under no_grad)


torch.nn.modules.module.register_module_forward_hook(record)
code = train.main(argv)
out.write_text(json.dumps({"conv_output_dtypes": sorted(seen)}))
sys.exit(code)
