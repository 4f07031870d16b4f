"""train.cuda_graph (distgen/loops/capture.py): refused by name where it cannot capture (a CPU run here),
and the step it captures -- each step zeroing, checking, recording and accumulating its own flag and
statistics -- gives exactly the eager stepper's weights, statistics and guard state, NaN steps included.
The capture itself needs CUDA: `make gpu-check` runs it (launch/gpu_check.py, check "cuda_graph")."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

from conftest import ROOT, TINY_GAN
from distgen import recipes, stats
from distgen.data import DataInfo
from distgen.errors import ConfigError
from distgen.families import FAMILIES
from distgen.loops.guard import Guard
from distgen.loops.stepper import Group, Stepper

DIGITS = DataInfo(32, 1, tuple("0123456789"), (), {}, {})




def test_cuda_graph_on_a_cpu_says_it_needs_cuda(digits, tmp_path, fresh_accelerate):
    from distgen.loops import adversarial

    cfg = recipes.load(ROOT / "recipes" / "dcgan_digits_smoke.yaml", [
        *TINY_GAN, f"data.root={digits}", f"run.dir={tmp_path / 'run'}", "train.steps=2", "train.cuda_graph=true"])
    with pytest.raises(ConfigError, match="train.cuda_graph needs CUDA; this run is on cpu"):
        adversarial.train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def _setup():
    """A tiny DCGAN, its prepared nets, the guard and the stepper (CPU)."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    cfg = recipes.from_dict({"family": "dcgan", "model": {"z_dim": 8, "width": 4}, "train": {"batch_size": 4,
                                                                                             "max_nonfinite": 2}})
    torch.manual_seed(0)
    family = FAMILIES["dcgan"](cfg, DIGITS)
    acc = Accelerator(cpu=True)
    opts = [family.optimizer(n, family.nets[n].parameters()) for n in ("G", "D")]
    G, D, opt_g, opt_d = acc.prepare(family.nets["G"], family.nets["D"], *opts)
    nets = {"G": G, "D": D}
    guard = Guard.__new__(Guard)  # no signal handlers in the test process
    guard.acc, guard.cfg, guard.run = acc, cfg, SimpleNamespace(dir=Path("/nonexistent"))
    guard._init_rows()
    stepper = Stepper(acc, cfg, guard, nets, {"D": Group(("D",), [opt_d]), "G": Group(("G",), [opt_g])})
    return family, nets, guard, stepper


def _train(capture_mode: bool, batches, nan_at: set):
    """Three D+G iterations of a tiny DCGAN through the stepper; the D step of iterations in `nan_at` gets a
    NaN loss. Returns the nets, the guard and the statistics."""
    family, nets, guard, stepper = _setup()
    stepper.capture_mode = capture_mode
    stats.collect(), stats.collect_counts()
    torch.manual_seed(1)
    for it, batch in enumerate(batches):
        for phase in ("D", "G"):
            with stepper.micro_batch(phase):
                terms = family.loss(phase, nets, {"image": batch} if phase == "D" else None)
                if phase == "D" and it in nan_at:
                    terms = {k: v * float("nan") for k, v in terms.items()}
                stepper.step(terms, phase)
        stepper.end_iteration()
    return nets, guard, stats.collect()


def test_the_captured_step_equals_the_eager_step(fresh_accelerate):
    batches = [torch.rand(4, 1, 32, 32) * 2 - 1 for _ in range(3)]
    eager, eager_guard, eager_stats = _train(False, batches, nan_at={1})
    captured, captured_guard, captured_stats = _train(True, batches, nan_at={1})
    for name in ("G", "D"):
        for (k, a), b in zip(eager[name].state_dict().items(), captured[name].state_dict().values()):
            assert torch.equal(a, b), f"{name}.{k} differs"
    assert eager_stats.keys() == captured_stats.keys() and "nonfinite_skipped" in eager_stats
    for k in eager_stats:
        torch.testing.assert_close(eager_stats[k], captured_stats[k], rtol=0, atol=0, equal_nan=True)
    assert eager_stats["nonfinite_skipped"].item() == pytest.approx(1 / 6)  # one of six optimizer steps
    assert torch.equal(eager_guard._worst_vec, captured_guard._worst_vec)
    assert eager_guard._worst_vec.tolist() == [1.0, 0.0]  # D had one non-finite step, G none


def test_gpu_check_runs_the_cuda_graph_check_and_on_a_cpu_expects_the_refusal(tmp_path):
    """launch/gpu_check.py's cuda_graph check on the CPU: each captured family's run must refuse with the
    one-line reason (on CUDA the same check compares captured and eager weights)."""
    import json
    import sys

    from conftest import run

    result = run([sys.executable, "launch/gpu_check.py", "--device", "cpu", "--only", "cuda_graph",
                  "--families", "dcgan", "vae", "--jobs", "1", "--workdir", str(tmp_path)], timeout=600)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    checks = {line["check"]: line for line in lines}
    assert set(checks) >= {"cuda_graph/dcgan"} and "cuda_graph/vae" not in checks, result.stdout[-2000:]
    assert checks["cuda_graph/dcgan"]["ok"] is True, checks["cuda_graph/dcgan"]
    assert result.returncode == 0, result.stderr[-2000:]


class _FakeGraph:
    """torch.cuda.CUDAGraph on a CPU: capturing runs the body once (a real capture records it without
    running it); a replay runs nothing and is counted."""

    def __init__(self):
        self.replays = 0

    def replay(self):
        self.replays += 1


def test_every_replay_is_counted_in_the_statistics(monkeypatch, fresh_accelerate):
    """A replay runs no Python, so the host-side counts of what the captured step reported must follow it
    (stats.recount). The step flushes its own statistics inside the graph; what it flushed is what each
    replay recounts (else the logged means divide many replays' sums by one report, and the names vanish
    after the first log)."""
    from contextlib import contextmanager, nullcontext

    from distgen.loops import capture

    @contextmanager
    def graph(g, pool=None, capture_error_mode="global"):
        assert capture_error_mode == "thread_local"  # the pin-memory thread must not void the capture
        yield

    stream = SimpleNamespace(wait_stream=lambda s: None)
    for name, value in (("Stream", lambda: stream), ("stream", lambda s: nullcontext()),
                        ("current_stream", lambda *a: stream),
                        ("CUDAGraph", _FakeGraph), ("graph", graph), ("graph_pool_handle", lambda: None),
                        ("synchronize", lambda *a: None)):
        monkeypatch.setattr(torch.cuda, name, value)
    family, nets, guard, stepper = _setup()
    phases = capture.CapturedPhases(stepper, family, nets)
    stats.collect(), stats.collect_counts()
    batch = {"image": torch.rand(4, 1, 32, 32) * 2 - 1}

    def iteration():
        for phase in ("D", "G"):
            phases.run(phase, batch if phase == "D" else None)
        stepper.end_iteration()
        phases.end_iteration()

    for _ in range(capture.WARMUP + 1):  # warm-up, then the iteration that captures (and replays once)
        iteration()
    assert set(phases.graphs) == {"D", "G"} and phases.graphs["D"].replays == 1
    reported = {name for _, name, _ in phases.records["D"]}
    assert {"D/real", "D/fake", "D(x)", "D(G(z))", "nonfinite_skipped"} <= reported, reported
    assert "G/adv" in {name for _, name, _ in phases.records["G"]}
    counts = dict(stats._slot_count)
    for _ in range(3):
        iteration()
    assert phases.graphs["D"].replays == 4
    added = {key[1]: stats._slot_count[key] - counts.get(key, 0) for key in stats._slot_count}
    # per replay: one report of each loss term, one per image of D(x) (a batch of 4 sigmoids)
    assert added["D/real"] == 3 and added["G/adv"] == 3 and added["D(x)"] == 3 * 4, added
    stats.collect(), stats.collect_counts()
