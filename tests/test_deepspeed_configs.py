"""launch/deepspeed/*.yaml train a recipe as DDP does: accumulation from train.grad_accum, no clipping.

Each config is loaded the way users load it (accelerate launch --config_file) and the effective
settings are read back from the prepared DeepSpeed engine (tests/deepspeed_effective.py).
"""
from __future__ import annotations

import json

import pytest

from conftest import BIN, run


def effective(zero: int, grad_accum: int, *flags: str):
    return run([str(BIN / "accelerate"), "launch", "--config_file", f"launch/deepspeed/zero{zero}.yaml",
                *flags, "tests/deepspeed_effective.py", str(grad_accum)],
               timeout=240)


@pytest.mark.parametrize("zero", [1, 2])
def test_deepspeed_config_keeps_the_recipes_accumulation_and_does_not_clip(zero):
    result = effective(zero, 3)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got == {"gradient_clipping": 0.0, "gradient_accumulation_steps": 3, "accelerate_accumulation": 3}


def test_accumulation_pinned_by_the_launcher_is_refused_with_the_key():
    result = effective(1, 3, "--gradient_accumulation_steps", "1")
    assert result.returncode != 0
    assert "gradient_accumulation_steps=1 but train.grad_accum=3" in result.stderr
