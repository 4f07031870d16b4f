"""launch/sweep.py before and after its runs: every run's data checked before any starts, a failed
run's reason in the summary, wall time with start-up, and a grid whose identity ignores argument order."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY_GAN, launch_module, main_in_process, run

from distgen import sweep as sw

RECIPE = "recipes/dcgan_digits_smoke.yaml"
TINY = [*TINY_GAN, "train.steps=2", "log.every=1", "log.sample_every=2", "run.checkpoint_every=2"]


@pytest.fixture
def launch_on_path(monkeypatch):
    """launch/sweep.py imports launch/submit.py as a sibling, as when it runs as a script."""
    monkeypatch.syspath_prepend(str(ROOT / "launch"))


def sweep(*args: str):
    return run([sys.executable, "launch/sweep.py", *args, "--local", "--launcher", "python"], timeout=600)


def test_bad_data_stops_the_sweep_before_any_run_starts(digits, tmp_path, launch_on_path):
    missing = tmp_path / "no-shards"
    result = main_in_process("launch/sweep.py", [RECIPE, f"data.root={digits},{missing}", "run.seed=0,1", *TINY,
                                                 "--root", str(tmp_path / "sweeps"), "--name", "s", "--local",
                                                 "--launcher", "python"])
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: sweep run [data.root={missing}, run.seed=0]: data.root '{missing}': no index.json")
    assert line.endswith("(2 of the 4 runs have bad data); nothing was started")
    assert not (tmp_path / "sweeps").exists()  # no manifest, no logs, no run dir: nothing ran


@pytest.fixture(scope="module")
def two_runs(digits, tmp_path_factory):
    """A sweep of two runs side by side: eval.every=0 trains; eval.every=2 fails at its start (periodic FID
    without local Inception weights), after the data check has passed."""
    root = tmp_path_factory.mktemp("sweeps")
    result = sweep(RECIPE, "eval.every=0,2", *TINY, f"data.root={digits}",
                   f"eval.inception_weights={root / 'none.pth'}", "--root", str(root), "--name", "s", "--parallel", "2")
    return result, root / "s"


def test_a_failed_runs_first_error_line_is_in_the_summary(two_runs):
    result, sweep_dir = two_runs
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    good, bad = manifest["runs"]
    assert good["status"] == "finished" and "error" not in good
    assert bad["status"] == "failed" and "eval.inception_weights" in bad["error"]
    assert f"error: run every=2 failed (exit 2): {bad['error']}; its log: " in result.stderr
    assert f"every=2: failed (exit 2, " in result.stdout and f"): {bad['error']}" in result.stdout
    log = (sweep_dir / "logs" / "every=2.log").read_text()
    assert f"error: {bad['error']}" in log  # the line train.py printed, word for word


def test_first_error_reads_train_py_errors_and_tracebacks():
    assert sw.first_error("loading\nerror: data.root 'x': no index.json\nmore\n") == "data.root 'x': no index.json"
    trace = ("step 1\nTraceback (most recent call last):\n  File \"a.py\", line 1\n    x()\n"
             "RuntimeError: CUDA out of memory\n")
    assert sw.first_error(trace) == "RuntimeError: CUDA out of memory"
    assert sw.first_error("Killed\n") == "Killed" and sw.first_error("") == "no output"


def test_wall_time_includes_each_runs_start_up(two_runs):
    result, sweep_dir = two_runs
    assert "wall time: " in result.stdout.splitlines()[-1]
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    report = launch_module("launch/report.py")
    training, _, _ = report.sessions_time(json.loads((sweep_dir / "every=0" / "run.json").read_text()))
    # the process (python, torch's import, the data, then training) outlasts its training session
    assert manifest["runs"][0]["seconds"] > training + 1, (manifest["runs"][0]["seconds"], training)
    assert manifest["runs"][1]["seconds"] > 0  # a failed start took time too
    assert "start-up included (sweep.json)" in report.sweep_wall_time(manifest, [training])


def build(argv: list[str], root: Path):
    module = launch_module("launch/sweep.py")
    args = module.parse([*argv, "--root", str(root)])
    return module.build(args)


def test_the_order_of_grid_arguments_is_not_the_sweeps_identity(tmp_path, launch_on_path):
    one, runs_one, root = build([RECIPE, "optim.lr_d=1e-4,2e-4", "run.seed=0,1", "train.steps=4", "log.every=2"],
                                tmp_path)
    two, runs_two, _ = build([RECIPE, "run.seed=0,1", "log.every=2", "optim.lr_d=1e-4,2e-4", "train.steps=4"],
                             tmp_path)
    assert one.name == two.name == "dcgan_digits_smoke__lr_d-seed"
    assert [r["id"] for r in runs_one] == [r["id"] for r in runs_two]
    assert [r["dir"] for r in runs_one] == [r["dir"] for r in runs_two]
    sw.write_manifest(one, runs_one, root)
    sw.check_same(two, sw.read_manifest(sw.manifest_path(root, one.name)))  # a continuation, not a new sweep
