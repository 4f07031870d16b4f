"""The real entry point end to end: run-dir contract, exact resume, two real processes, evaluation."""
from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from checkpoint_state import assert_resumed_from, assert_same_checkpoint
from conftest import TINY_CLS, TINY_GAN, metrics, run, train, script


def _weights(ckpt):
    meta = json.loads((ckpt / "meta.json").read_text())
    return {f"{net}.{k}": v for net, f in meta["family_nets"].items() for k, v in load_file(str(ckpt / f)).items()}


@pytest.fixture(scope="module")
def judge(digits, tmp_path_factory):
    """A tiny classifier run: the judge for generated digits in these tests."""
    run_dir = tmp_path_factory.mktemp("runs") / "judge"
    train("classifier_digits", *TINY_CLS, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=20",
          "eval.every=10", "run.checkpoint_every=10")
    return run_dir


def test_classifier_run_writes_eval_json(judge):
    for step in (10, 20):
        result = json.loads((judge / "eval" / f"step_{step}.json").read_text())
        assert result["step"] == step and 0.0 <= result["acc"] <= 1.0
    assert (judge / "checkpoints" / "latest").resolve().name == "step_20"


def test_twenty_step_run_leaves_the_run_dir_contract(digits, judge, tmp_path):
    run_dir = tmp_path / "acgan"
    result = train("quickstart", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=20",
                   "run.checkpoint_every=10", f"eval.classifier={judge}", launcher="accelerate")
    assert f"run dir: {run_dir}" in result.stdout
    assert (run_dir / "config.yaml").is_file()
    rows = metrics(run_dir)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    for key in ("D/real", "D/fake", "D/cls_real", "G/adv", "G/cls", "D(x)", "D(G(z))", "img/s"):
        assert all(key in r and r[key] == r[key] for r in rows), key  # present and not NaN
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_10.png", "step_20.png"]
    ckpts = run_dir / "checkpoints"
    assert {p.name for p in ckpts.iterdir()} == {"step_10", "step_20", "latest"}
    assert (ckpts / "latest").resolve() == (ckpts / "step_20").resolve()
    assert (run_dir / "eval").is_dir() and (run_dir / "report").is_dir()

    evaluated = script("evaluate", str(run_dir), "--metrics", "acc", "--num-samples", "50")
    assert evaluated.returncode == 0, evaluated.stderr
    printed = json.loads(evaluated.stdout.strip().splitlines()[-1])
    written = json.loads((run_dir / "eval" / "step_20.json").read_text())
    assert printed["acc"] == written["acc"] and 0.0 <= written["acc"] <= 1.0
    assert written["num_samples"] == 50
    assert (run_dir / "eval" / "grid_step_20.png").is_file()


# One adversarial recipe with the most state to restore (worker stream positions, EMA, class-conditional
# nets); the single-objective loop's exact resume is tests/test_vae_dann.py's, CycleGAN's test_image2image.py's.
@pytest.mark.parametrize("recipe, extra", [
    ("quickstart", ["data.num_workers=2", "train.ema_kimg=0.5"]),  # worker stream position and EMA restored too
])
def test_resume_is_exact(digits, tmp_path, recipe, extra):
    common = [*TINY_GAN, *extra, f"data.root={digits}", "run.checkpoint_every=10", "run.keep_last=0"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(recipe, *common, f"run.dir={straight}", "train.steps=20")
    train(recipe, *common, f"run.dir={split}", "train.steps=10")
    resumed = train(recipe, *common, f"run.dir={split}", "train.steps=20", resume="auto")
    assert_resumed_from(split, split / "checkpoints" / "step_10", resumed.stdout + resumed.stderr)
    # every checkpointed tensor, bit for bit: weights, EMA (custom_checkpoint_1: its average and image count),
    # both optimizers' moments and step counts, schedulers, RNG states, the train state
    state = assert_same_checkpoint(straight / "checkpoints" / "step_20", split / "checkpoints" / "step_20",
                                   expect=("G.safetensors", "D.safetensors", "optimizer.bin", "optimizer_1.bin",
                                           "custom_checkpoint_1.pkl", "random_states_0.pkl"))
    assert int(state["custom_checkpoint_1.pkl.nimg"]) == 20 * 16  # the EMA counted every generator step's batch
    a = _weights(straight / "checkpoints" / "step_20")
    # and the first ten steps really did change the weights (so equality is not vacuous)
    first = _weights(split / "checkpoints" / "step_10")
    assert any(not torch.equal(first[k], a[k]) for k in a)
    assert [r["step"] for r in metrics(split)] == [5, 10, 15, 20]


def test_judge_recipe_gives_bit_identical_weights_from_the_same_command(digits, tmp_path):
    """The digit judge (recipes/classifier_digits.yaml) trained twice by the same command, once launched
    with one OpenMP thread and once with two (`make demo` launches with as many as the machine has):
    the same weights bit for bit. A CPU convolution's sums, so the weights, depend on the thread count,
    which the recipe pins (train.threads); dropout, the random shifts and the data order follow run.seed."""
    common = [*TINY_CLS, f"data.root={digits}", "train.steps=8", "run.checkpoint_every=4", "eval.every=8",
              "run.keep_last=0"]
    for name, threads in (("a", "1"), ("b", "2")):
        train("classifier_digits", *common, f"run.dir={tmp_path / name}", env={"OMP_NUM_THREADS": threads})
    a, b = (_weights(tmp_path / name / "checkpoints" / "step_8") for name in "ab")
    assert a.keys() == b.keys() and a
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    # and training moved them: not the equality of two freshly seeded nets
    early = _weights(tmp_path / "a" / "checkpoints" / "step_4")
    assert any(not torch.equal(early[k], a[k]) for k in a)


def test_two_real_processes_end_with_identical_parameters(digits, tmp_path):
    run_dir = tmp_path / "ddp"
    train("dcgan_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=10",
          launcher="accelerate2")
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and len(ranks["fingerprints"]) == 2
    assert ranks["in_sync"] and ranks["relative_drift"] <= 1e-6
    assert ranks["fingerprints"][0] == pytest.approx(ranks["fingerprints"][1], rel=1e-6)
    assert metrics(run_dir)[-1]["step"] == 10


def test_existing_run_dir_is_not_overwritten_without_resume(digits, tmp_path):
    run_dir = tmp_path / "once"
    common = [*TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=2", "run.checkpoint_every=2"]
    train("dcgan_digits_smoke", *common)
    again = script("train", "recipes/dcgan_digits_smoke.yaml", *common)
    assert again.returncode != 0 and "--resume auto" in again.stderr and "Traceback" not in again.stderr


def test_missing_data_is_a_clear_error(tmp_path):
    result = run([sys.executable, "launch/train.py", "recipes/quickstart.yaml", f"data.root={tmp_path / 'none'}",
                  f"run.dir={tmp_path / 'r'}"])
    assert result.returncode != 0
    assert "data.root" in result.stderr and "python -m shards" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("recipe, tiny", [("dcgan_digits_smoke", TINY_GAN), ("classifier_digits", TINY_CLS)],
                         ids=["adversarial", "single"])
def test_skipped_bad_input_reaches_metrics(tmp_path, recipe, tiny):
    """A corrupt image and a cut-off shard: training goes on, and metrics.jsonl counts the skips (both loops)."""
    from test_stream import write_broken_shards

    data = write_broken_shards(tmp_path / "broken", corrupt=2, size=16)
    run_dir = tmp_path / "run"
    train(recipe, *tiny, f"data.root={data}", f"run.dir={run_dir}", "train.steps=20",
          "data.max_skip_fraction=0.5", "train.batch_size=8")
    last = [r for r in metrics(run_dir) if "img/s" in r][-1]  # the last training row (eval rows follow)
    assert last["step"] == 20 and last["data/skipped"] >= 2  # both bad inputs, at least once
