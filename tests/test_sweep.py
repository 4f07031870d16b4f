"""launch/sweep.py and launch/compare.py --group-by: a grid of real tiny runs, resumed and grouped."""
from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY_GAN, run, script

from distgen import sweep as sw
from distgen.errors import ConfigError

RECIPE = "recipes/dcgan_digits_smoke.yaml"
# 2 learning rates x 2 seeds; a checkpoint at step 2 and at the last step 4
TINY = [*TINY_GAN, "train.steps=4", "log.every=2", "log.sample_every=4", "run.checkpoint_every=2"]


def sweep(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return run([sys.executable, "launch/sweep.py", *args], timeout=timeout)


@pytest.fixture(scope="module")
def grid(digits, tmp_path_factory) -> Path:
    """A finished 2x2 sweep (optim.lr_d x run.seed), run locally two at a time."""
    root = tmp_path_factory.mktemp("sweeps")
    args = [RECIPE, "optim.lr_d=1e-4,3e-4", "run.seed=0,1", *TINY, f"data.root={digits}",
            "--name", "grid", "--root", str(root), "--local", "--parallel", "2", "--launcher", "python"]
    result = sweep(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (root / "args.json").write_text(json.dumps(args))
    return root / "grid"


def final(run_dir: Path, key: str) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r][-1]


def test_local_sweep_runs_every_combination_with_a_manifest(grid):
    manifest = json.loads((grid / "sweep.json").read_text())
    assert manifest["grid"] == {"optim.lr_d": ["1e-4", "3e-4"], "run.seed": ["0", "1"]}
    ids = [r["id"] for r in manifest["runs"]]
    assert ids == ["lr_d=1e-4,seed=0", "lr_d=1e-4,seed=1", "lr_d=3e-4,seed=0", "lr_d=3e-4,seed=1"]
    for r in manifest["runs"]:
        assert r["status"] == "finished" and Path(r["dir"]) == grid / r["id"]
        assert sw.checkpoint_step(r["dir"]) == 4
        cfg = (grid / r["id"] / "config.yaml").read_text()
        assert "group: grid" in cfg  # W&B group = the sweep's name
        lr, seed = r["values"]["optim.lr_d"], r["values"]["run.seed"]
        assert f"lr_d: {float(lr)}" in cfg and f"seed: {seed}" in cfg


def test_grouped_table_is_mean_and_std_over_seeds(grid, tmp_path):
    out = tmp_path / "table.csv"
    result = script("compare", str(grid), "--group-by", "optim.lr_d",
                  "--metrics", "D/real,G/adv", "--csv", str(out), "--plot", str(tmp_path / "curves.png"))
    assert result.returncode == 0, result.stderr
    table = [line for line in result.stdout.splitlines() if line.startswith("| 0.000")]
    assert len(table) == 2 and all(line.count("±") == 2 for line in table), result.stdout
    rows = list(csv.DictReader(out.open()))
    assert [r["config.optim.lr_d"] for r in rows] == ["0.0001", "0.0003"]
    for row, lr in zip(rows, ["1e-4", "3e-4"]):
        values = [final(grid / f"lr_d={lr},seed={s}", "G/adv") for s in (0, 1)]
        assert row["n"] == "2" and row["G/adv_n"] == "2"
        assert float(row["G/adv_mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row["G/adv_std"]) == pytest.approx(statistics.stdev(values))
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_rerun_skips_finished_and_resumes_interrupted(grid):
    # make one run look interrupted after its step-2 checkpoint
    cut = grid / "lr_d=3e-4,seed=1"
    shutil.rmtree(cut / "checkpoints" / "step_4")
    (cut / "checkpoints" / "latest").unlink()
    os.symlink("step_2", cut / "checkpoints" / "latest")
    rows = (cut / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text("".join(r + "\n" for r in rows if json.loads(r)["step"] <= 2))
    untouched = {p: p.stat().st_mtime_ns for p in grid.glob("*/metrics.jsonl") if p.parent != cut}
    args = json.loads((grid.parent / "args.json").read_text())
    result = sweep(*args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("finished, skipped") == 3
    assert "lr_d=3e-4,seed=1: resuming" in result.stdout
    assert sw.checkpoint_step(cut) == 4
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # finished runs were not touched
    log = (grid / "logs" / "lr_d=3e-4,seed=1.log").read_text()
    assert "--resume auto" in log


def test_sweep_task_runs_its_array_task(grid, tmp_path):
    """launch/sweep_task.py: $SLURM_ARRAY_TASK_ID picks the run; its overrides win over the command line's."""
    manifest = json.loads((grid / "sweep.json").read_text())
    fresh = tmp_path / "fresh"
    task = manifest["runs"][2]
    task["overrides"] = [o for o in task["overrides"] if not o.startswith("run.dir=")] + [f"run.dir={fresh}"]
    task["dir"] = str(fresh)
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(manifest))
    line = ["launch/sweep_task.py", str(path), RECIPE, f"run.dir={tmp_path / 'slurm-1'}", "--resume", "auto"]
    result = run([sys.executable, *line], env={"SLURM_ARRAY_TASK_ID": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert sw.checkpoint_step(fresh) == 4 and not (tmp_path / "slurm-1").exists()
    assert "lr_d: 0.0003" in (fresh / "config.yaml").read_text()
    again = run([sys.executable, *line], env={"SLURM_ARRAY_TASK_ID": "2"})
    assert again.returncode == 0 and "finished already" in again.stdout
    bad = run([sys.executable, *line], env={"SLURM_ARRAY_TASK_ID": "9"})
    assert bad.returncode == 2 and "runs 0..3" in bad.stderr


def test_slurm_dry_run_renders_one_array_script(tmp_path):
    result = sweep(RECIPE, "optim.lr_d=1e-4,2e-4,3e-4", "run.seed=0,1", "train.steps=4", "--root", str(tmp_path),
                   "--slurm", "--dry-run", "--max-concurrent", "2", "--time", "1:00:00", "--gpus-per-node", "1")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert script.count("#SBATCH --array=0-5%2\n") == 1
    assert "launch/sweep_task.py" in script and "launch/train.py" not in script
    assert str(tmp_path / "dcgan_digits_smoke__lr_d-seed" / "sweep.json") in script
    path = tmp_path / "array.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert not any(tmp_path.glob("*/sweep.json"))  # a dry run writes nothing


def test_invalid_combination_is_refused_before_anything_runs(tmp_path):
    result = sweep(RECIPE, "model.width=8,wide", "run.seed=0,1", "--root", str(tmp_path), "--local")
    assert result.returncode == 2
    assert "model.width=wide" in result.stderr and "'model.width' must be an integer" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_grid_values_parse_like_overrides():
    assert sw.split_values("1e-4,2e-4") == ["1e-4", "2e-4"]
    assert sw.split_values("[1, 2],[3]") == ["[1, 2]", "[3]"]
    assert sw.split_values("'a,b',c") == ["'a,b'", "c"]
    fixed, axes = sw.parse_grid(["train.steps=4", "model.widths=[8, 16],[16, 32]", "run.seed=0,1"])
    assert fixed == ["train.steps=4"] and axes == {"model.widths": ["[8, 16]", "[16, 32]"], "run.seed": ["0", "1"]}
    runs = sw.expand(sw.Sweep("s", {RECIPE: []}, fixed, axes))
    assert [r["id"] for r in runs] == ["widths=8-16,seed=0", "widths=8-16,seed=1",
                                       "widths=16-32,seed=0", "widths=16-32,seed=1"]
    assert runs[1]["overrides"] == ["train.steps=4", "model.widths=[8, 16]", "run.seed=1"]
    with pytest.raises(ConfigError, match="given twice"):
        sw.parse_grid(["run.seed=0,1", "run.seed=2"])


def test_sweep_runs_record_what_their_wandb_group_is_grouped_by(tmp_path):
    """log.wandb.group_by/group_metrics in every run's config (so in W&B's): the swept keys but the seed,
    or a study's table; nothing for seeds only. launch/compare.py --wandb --group reads them."""
    from distgen.recipes import load

    def recorded(sweep: sw.Sweep) -> set:
        runs = sw.expand(sweep)
        sw.validate(sweep, runs, tmp_path)
        return {(c.log.wandb.group, c.log.wandb.group_by, c.log.wandb.group_metrics)
                for c in (load(r["recipe"], r["overrides"]) for r in runs)}

    recipe, other = str(ROOT / RECIPE), str(ROOT / "recipes/lsgan_digits_smoke.yaml")
    axes = {"optim.lr_d": ["1e-4", "3e-4"], "run.seed": ["0", "1"]}
    assert recorded(sw.Sweep("s", {recipe: []}, [], axes)) == {("s", ("optim.lr_d",), ())}
    assert recorded(sw.Sweep("s", {recipe: [], other: []}, [], axes)) == {("s", ("recipe", "optim.lr_d"), ())}
    table = {"group_by": ["optim.lr_d"], "metrics": ["G/adv"]}
    assert recorded(sw.Sweep("t", {recipe: []}, [], axes, table)) == {("t", ("optim.lr_d",), ("G/adv",))}
    assert recorded(sw.Sweep("u", {recipe: []}, [], {"run.seed": ["0", "1"]})) == {("u", (), ())}


def test_long_ids_stay_short_and_distinct():
    axes = {"model.some_long_key": ["x" * 60 + "a", "x" * 60 + "b"]}
    ids = [r["id"] for r in sw.expand(sw.Sweep("s", {RECIPE: []}, [], axes))]
    assert len(set(ids)) == 2 and all(len(i) <= sw.MAX_ID for i in ids)


@pytest.mark.parametrize("study", sorted(p.name for p in (ROOT / "studies").glob("*.yaml")))
def test_every_study_validates(study, tmp_path):
    """Digits and full editions: every run of every study is a valid config (nothing runs)."""
    spec = sw.load_study(ROOT / "studies" / study)
    spec.recipes = {str(ROOT / r): ov for r, ov in spec.recipes.items()}
    runs = sw.expand(spec)
    sw.validate(spec, runs, tmp_path)
    assert len(runs) >= 3 and spec.table.get("group_by")
    assert len({r["id"] for r in runs}) == len(runs)


def test_a_study_file_runs_its_after_commands_and_prints_its_table(grid, digits, tmp_path):
    """A study over the finished grid: nothing trains again; `after` runs once per run; the table prints."""
    args = json.loads((grid.parent / "args.json").read_text())
    fixed = args[3:args.index("--name")]
    probe = "import pathlib, sys; pathlib.Path(sys.argv[1], 'probe.txt').write_text('after')"
    study = tmp_path / "probe.yaml"
    study.write_text(json.dumps({
        "name": "grid", "recipe": RECIPE, "overrides": fixed,
        "grid": {"optim.lr_d": ["1e-4", "3e-4"], "run.seed": [0, 1]},
        "after": [f"-c {shlex.quote(probe)} {{dir}}"],
        "table": {"group_by": ["optim.lr_d"], "metrics": ["G/adv"]}}))
    result = sweep(str(study), "--root", str(grid.parent), "--launcher", "python")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("running the study's `after` commands") == 4
    assert all((grid / r / "probe.txt").read_text() == "after" for r in ("lr_d=1e-4,seed=0", "lr_d=3e-4,seed=1"))
    table = [line for line in result.stdout.splitlines() if line.startswith("| 0.000")]
    assert len(table) == 2 and all("±" in line for line in table), result.stdout
    again = sweep(str(study), "--root", str(grid.parent), "--launcher", "python")
    assert again.returncode == 0 and again.stdout.count("finished, skipped") == 4
