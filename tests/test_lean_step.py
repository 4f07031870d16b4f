"""The lean training step: the harness dispatches at most 1.05x the aten ops of a hand-written loop per D+G
iteration, in fp32 and bf16 (benchmarks/train_overhead.py counts them with a TorchDispatchMode). On a GPU
that waits on the host every dispatched op costs about one launch, so this count is the overhead there.

    .venv/bin/python -m pytest tests/test_lean_step.py
"""
from __future__ import annotations

import pytest

from conftest import launch_module


@pytest.fixture(scope="module")
def overhead(digits, tmp_path_factory):
    import os

    before = os.environ.get("DISTGEN_DIGITS")
    os.environ["DISTGEN_DIGITS"] = str(digits)  # the session's shards, not the checkout's data/digits
    yield launch_module("benchmarks/train_overhead.py")
    if before is None:
        os.environ.pop("DISTGEN_DIGITS")
    else:
        os.environ["DISTGEN_DIGITS"] = before


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_harness_dispatches_at_most_5_percent_more_ops_than_a_bare_loop(overhead, precision):
    r = overhead.ops_per_iteration(precision, steps=4)
    harness, bare = r["harness"], r["bare"]
    assert bare["ops"] > 150  # the counter sees the real training (convolutions, their backward, Adam)
    assert harness["by_op"].get("aten.convolution") == bare["by_op"]["aten.convolution"]  # the same work
    # one autocast region per phase: D's and G's weights are cast once per phase, as in the bare loop
    assert harness["by_op"].get("aten._to_copy", 0) <= bare["by_op"].get("aten._to_copy", 0)
    assert r["ratio"] <= 1.05, (f"{harness['ops']:.1f} ops per iteration against {bare['ops']:.1f}: "
                                f"{ {k: (v, bare['by_op'].get(k, 0)) for k, v in harness['by_op'].items() if v != bare['by_op'].get(k, 0)} }")


def test_the_wall_clock_comparison_interleaves_the_loops_iteration_by_iteration(overhead, monkeypatch):
    """The timed comparison runs one iteration of each bare loop after every harness iteration and times
    the same number of each: the harness's iterations of the second half, less the last (its span would
    hold the final log and checkpoint)."""
    from types import SimpleNamespace

    import torch

    ran = []
    real = overhead.BareLoop.iteration
    monkeypatch.setattr(overhead.BareLoop, "iteration", lambda self: (ran.append(self.freeze_d), real(self))[1])
    args = SimpleNamespace(width=4, batch=8, steps=8)
    rates = overhead.interleaved_round(args, {"image": torch.rand(8, 1, 32, 32) * 2 - 1})
    assert rates["iterations"] == 8 - 8 // 2 - 1
    assert len(ran) == 2 * 8 and ran.count(True) == 8  # one of each bare loop per harness iteration
    assert ran[:2] != ran[2:4]  # their order alternates
    assert all(rates[k] > 0 for k in ("harness", "bare", "same"))
