"""log.tensorboard=true: metrics, sample grids and eval results in RUN_DIR/tensorboard, read back with
TensorBoard's own EventAccumulator; a resume appends, a rollback leaves each step once."""
from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, TINY_GAN, metrics, train

TINY = [*TINY_GAN, "log.every=2", "log.sample_every=2", "run.checkpoint_every=2", "log.tensorboard=true"]


def events(run_dir: Path) -> EventAccumulator:
    folders = {p.parent for p in (run_dir / "tensorboard").rglob("events.out.tfevents.*")}
    assert len(folders) == 1, folders  # one TensorBoard run per run dir, whatever the sessions
    acc = EventAccumulator(str(folders.pop()), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def assert_same_as_metrics(run_dir: Path, acc: EventAccumulator, tag: str) -> None:
    rows = [(r["step"], r[tag]) for r in metrics(run_dir) if tag in r]
    got = scalars(acc, tag)
    assert [s for s, _ in got] == [s for s, _ in rows]
    assert [v for _, v in got] == pytest.approx([v for _, v in rows], rel=1e-6)


def test_tensorboard_holds_the_logged_scalars_and_grids_and_a_resume_appends(digits, tmp_path):
    run_dir = tmp_path / "run"
    common = [*TINY, f"data.root={digits}", f"run.dir={run_dir}"]
    train("dcgan_digits_smoke", *common, "train.steps=4")
    first = events(run_dir)
    assert_same_as_metrics(run_dir, first, "D/real")
    assert [s for s, _ in scalars(first, "G/adv")] == [2, 4]
    assert [e.step for e in first.Images("samples")] == [2, 4]  # the sample grids W&B would get
    assert "config/text_summary" in first.Tags()["tensors"]  # the resolved config, as text

    train("dcgan_digits_smoke", *common, "train.steps=6", resume="auto")  # appends steps 5-6
    resumed = events(run_dir)
    for tag in ("D/real", "D/fake", "G/adv"):
        assert_same_as_metrics(run_dir, resumed, tag)
    assert [s for s, _ in scalars(resumed, "G/adv")] == [2, 4, 6]
    assert scalars(resumed, "D/real")[:2] == scalars(first, "D/real")  # the first session's values kept
    assert [e.step for e in resumed.Images("samples")] == [2, 4, 6]

    # roll back to step 4 and train 4-6 again: TensorBoard shows step 6 once, as metrics.jsonl does
    train("dcgan_digits_smoke", *common, "train.steps=6", "optim.lr_d=1e-3",
          resume=str(run_dir / "checkpoints" / "step_4"))
    rolled = events(run_dir)
    assert [s for s, _ in scalars(rolled, "G/adv")] == [2, 4, 6]
    assert_same_as_metrics(run_dir, rolled, "D/real")


def test_eval_results_go_to_tensorboard_too(tmp_path):
    """History.write_eval (FID and friends during training, a classifier's test accuracy) logs what W&B gets."""
    from accelerate.state import AcceleratorState, GradientState

    from distgen import recipes
    from distgen.loops.common import make_accelerator
    from distgen.loops.history import History, start_trackers

    cfg = recipes.load(ROOT / "recipes" / "dcgan_digits_smoke.yaml", ["log.tensorboard=true"])
    acc = make_accelerator(cfg)
    try:
        (tmp_path / "eval").mkdir()
        start_trackers(acc, cfg, tmp_path, 0)
        History(tmp_path, cfg, acc).write_eval(3, {"fid": 12.5, "kid_mean": 0.25})
        acc.end_training()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    got = events(tmp_path)
    assert scalars(got, "eval/fid") == [(3, 12.5)] and scalars(got, "eval/kid_mean") == [(3, 0.25)]
