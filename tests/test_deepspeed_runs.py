"""Training under DeepSpeed ZeRO-2 on the CPU: non-finite steps, fp32 master weights, resuming at another world size.

One bf16 run of the tiny classifier (DeepSpeed's start-up costs most of a minute) serves the first
tests: its loss is NaN from the 5th step on (tests/deepspeed_faults.py), with a checkpoint and a log
line every 2 steps and train.max_nonfinite=3.
"""
from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import BIN, metrics, run
from distgen.checkpoint import load_run
from distgen.errors import ConfigError
from distgen.loops.checkpointer import Checkpointer
from distgen.recipes import load as load_recipe

TINY = ["model.width=8", "train.batch_size=32", "eval.every=100", "log.sample_every=100"]


@pytest.fixture(scope="module")
def nan_run(digits, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("deepspeed") / "nan"
    result = run([str(BIN / "accelerate"), "launch", "--config_file", "launch/deepspeed/zero2.yaml",
                  "--mixed_precision", "bf16", "tests/deepspeed_faults.py", "5", "recipes/classifier_digits.yaml",
                  *TINY, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=20", "log.every=2",
                  "run.checkpoint_every=2", "run.keep_last=0", "train.max_nonfinite=3"], timeout=600)
    return run_dir, result


def _params(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    """The parameters (not the BatchNorm statistics, which every forward updates) of a checkpoint's net."""
    _, family, _ = load_run(run_dir, f"step_{step}")
    names = {n for n, _ in family.nets["net"].named_parameters()}
    weights = load_file(str(run_dir / "checkpoints" / f"step_{step}" / "net.safetensors"))
    return {n: w for n, w in weights.items() if n in names}


def test_non_finite_steps_under_deepspeed_are_skipped_counted_and_stop_the_run(nan_run):
    run_dir, result = nan_run
    assert result.returncode != 0  # (accelerate's DeepSpeed launcher reports the exit code 3 as a failed child)
    assert "error: 3 steps in a row had non-finite gradients (found at step 8); stopping. Last good checkpoint: " \
           "step_6" in result.stderr, result.stderr[-3000:]
    assert [(r["step"], r["nonfinite_skipped"]) for r in metrics(run_dir)] == [(2, 0), (4, 0), (6, 1), (8, 1)]
    before, after, trained = _params(run_dir, 4), _params(run_dir, 6), _params(run_dir, 2)
    assert all(torch.equal(before[n], after[n]) for n in before)  # steps 5 and 6 were skipped
    assert any(not torch.equal(before[n], trained[n]) for n in before)  # steps 3 and 4 were not
    assert all(torch.isfinite(w).all() for w in after.values())


def test_a_bf16_checkpoint_holds_the_fp32_master_weights(nan_run):
    """<net>.safetensors equals the fp32 weights DeepSpeed's own zero_to_fp32 rebuilds from the optimizer's
    shards, and is not the engine's bf16 copy (values a bf16 cannot hold)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    run_dir, _ = nan_run
    ckpt = run_dir / "checkpoints" / "step_4"
    saved = _params(run_dir, 4)
    masters = get_fp32_state_dict_from_zero_checkpoint(str(ckpt))
    engine = torch.load(ckpt / "pytorch_model" / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    assert saved and all(w.dtype == torch.float32 and torch.equal(w, masters[n]) for n, w in saved.items())
    assert engine["0.weight"].dtype == torch.bfloat16
    assert all(not torch.equal(w, w.bfloat16().float()) for w in saved.values())


def test_a_deepspeed_checkpoint_at_another_world_size_is_refused_before_anything_is_loaded(nan_run, capsys):
    """Resuming ZeRO state on another number of ranks is refused with the reason and the fix, even with
    --accept-new-data-order, before the resume is announced or DeepSpeed's load_state is reached."""
    run_dir, _ = nan_run
    cfg = load_recipe("recipes/classifier_digits.yaml", ["run.accept_new_data_order=true"])

    def must_not_load(*args, **kwargs):
        raise AssertionError("load_state reached")

    acc = types.SimpleNamespace(num_processes=2, process_index=0, is_main_process=True, mixed_precision="bf16",
                                state=types.SimpleNamespace(deepspeed_plugin=object()), load_state=must_not_load,
                                register_save_state_pre_hook=lambda hook: None,
                                register_load_state_pre_hook=lambda hook: None)
    ckpt = run_dir / "checkpoints" / "step_4"
    assert json.loads((ckpt / "meta.json").read_text())["topology"]["world_size"] == 1
    with pytest.raises(ConfigError) as refused:
        Checkpointer(run_dir, cfg, acc, {}).load(ckpt)
    assert "written by DeepSpeed on 1 processes and this run has 2" in str(refused.value)
    assert "Relaunch with --num_processes 1" in str(refused.value)
    assert "resum" not in capsys.readouterr().out  # nothing announced
