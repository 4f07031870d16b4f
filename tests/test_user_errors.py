"""What a new user tripped on: one clear line instead of a traceback or a silent surprise.

Optimiser keys out of range, `--metrics acc` without its judge, compare.py's figure in the current
directory, and `--resume auto` under another recipe or architecture."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, TINY_GAN, main_in_process, script, train

from distgen import recipes
from distgen.errors import ConfigError


@pytest.mark.parametrize("override, key", [
    ("optim.lr=-1e-3", "optim.lr"), ("optim.lr_d=0", "optim.lr_d"), ("optim.lr_g=.nan", "optim.lr_g"),
    ("optim.beta1=1.0", "optim.beta1"), ("optim.beta2=-0.1", "optim.beta2"),
    ("optim.betas_d=[0.5, 1.5]", "optim.betas_d[1]"), ("optim.momentum=1.2", "optim.momentum"),
    ("optim.weight_decay=-0.01", "optim.weight_decay")])
def test_optimiser_keys_out_of_range_name_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{re.escape(repr(key))} must"):
        recipes.load("recipes/quickstart.yaml", [override])


def test_negative_learning_rate_is_one_line_from_train_py():
    result = main_in_process("launch/train.py", ["recipes/classifier_digits.yaml", "optim.lr=-1e-3"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: 'optim.lr' must be a number > 0, got -0.001"]


def test_every_recipe_keeps_valid_optimiser_keys():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        recipes.load(path)  # raises on a recipe the new range checks refuse


# -- `--metrics acc` without its judge -------------------------------------------------------------

TINY_ACGAN = [*TINY_GAN, "train.steps=4", "log.every=2", "log.sample_every=4", "run.checkpoint_every=2"]


@pytest.fixture(scope="module")
def acgan_run(digits, tmp_path_factory) -> Path:
    """A tiny finished quickstart (ACGAN) run whose eval.classifier names a judge nobody trained."""
    run_dir = tmp_path_factory.mktemp("acgan") / "run"
    judge = run_dir.parent / "no-judge"
    train("quickstart", *TINY_ACGAN, f"data.root={digits}", f"run.dir={run_dir}", f"eval.classifier={judge}")
    return run_dir


def test_acc_without_the_judge_gives_the_command_that_trains_it(acgan_run):
    judge = acgan_run.parent / "no-judge"
    result = script("evaluate", str(acgan_run), "--metrics", "acc", "--num-samples", "10")
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert f"eval.classifier's classifier run '{judge}', which does not exist" in line
    assert f"`python launch/train.py recipes/classifier_digits.yaml run.dir={judge}`" in line
    assert "--classifier RUN_DIR" in line


def test_acc_with_a_judge_that_has_no_checkpoint_says_so(acgan_run, tmp_path):
    (tmp_path / "config.yaml").write_text("family: classifier\n")  # a judge run that never saved
    result = script("evaluate", str(acgan_run), "--metrics", "acc", "--classifier", str(tmp_path))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"--classifier's classifier run '{tmp_path}', which has no checkpoint yet" in line
    assert "recipes/classifier_digits.yaml" in line


def test_acc_with_no_judge_named_says_where_it_comes_from(acgan_run):
    config = acgan_run / "config.yaml"
    saved = config.read_text()
    try:
        config.write_text(saved.replace(f"classifier: {acgan_run.parent / 'no-judge'}", "classifier: ''"))
        result = script("evaluate", str(acgan_run), "--metrics", "acc")
    finally:
        config.write_text(saved)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "judged by a classifier run (eval.classifier's judge), and this run names none" in line
    assert "recipes/classifier_digits.yaml" in line and "--classifier runs/demo/classifier_digits" in line


# -- compare.py's figure goes next to what it compares ---------------------------------------------

def test_compare_writes_its_curves_next_to_the_runs_and_says_where(acgan_run, tmp_path):
    other = tmp_path / "runs" / "b"
    shutil.copytree(acgan_run, tmp_path / "runs" / "a")
    shutil.copytree(acgan_run, other)
    assert not (ROOT / "compare_curves.png").exists()
    result = script("compare", str(tmp_path / "runs" / "a"), str(other))
    assert result.returncode == 0, result.stderr
    assert not (ROOT / "compare_curves.png").exists()  # not in the current directory (the repo)
    plot = tmp_path / "runs" / "compare_curves.png"
    assert plot.is_file() and f"![learning curves]({plot})" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == f"learning curves: {plot}"
    one = script("compare", str(other))  # one run dir: inside it
    assert (other / "compare_curves.png").is_file() and f"learning curves: {other / 'compare_curves.png'}" in one.stderr
    out = script("compare", str(other), "--out", str(tmp_path / "mine.png"))
    assert (tmp_path / "mine.png").is_file() and f"learning curves: {tmp_path / 'mine.png'}" in out.stderr


# -- `--resume auto` under another recipe or architecture ------------------------------------------

def resume_copy(acgan_run: Path, digits: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """A copy of the finished 4-step run, and the overrides it was trained with (pointed at the copy)."""
    run_dir = tmp_path / "run"
    shutil.copytree(acgan_run, run_dir, symlinks=True)  # checkpoints/latest stays a link
    return run_dir, [*TINY_ACGAN, f"data.root={digits}", f"run.dir={run_dir}",
                     f"eval.classifier={acgan_run.parent / 'no-judge'}"]


def test_resume_refuses_another_family_naming_what_changed(acgan_run, digits, tmp_path):
    run_dir, _ = resume_copy(acgan_run, digits, tmp_path)
    before = (run_dir / "config.yaml").read_text()
    result = main_in_process("launch/train.py", ["recipes/dcgan_digits_smoke.yaml", *TINY_GAN, f"data.root={digits}",
                                                 f"run.dir={run_dir}", "--resume", "auto"])
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --resume: ") and "trained as family 'acgan' (recipe 'quickstart')" in line
    assert "this config is family 'dcgan' (recipe 'dcgan_digits_smoke')" in line and "family: acgan -> dcgan" in line
    assert (run_dir / "config.yaml").read_text() == before  # nothing rewritten
    assert json_lines(run_dir) == json_lines(acgan_run)  # and nothing trained


def test_resume_refuses_another_width_in_one_line(acgan_run, digits, tmp_path):
    run_dir, overrides = resume_copy(acgan_run, digits, tmp_path)
    before = (run_dir / "config.yaml").read_text()
    result = main_in_process("launch/train.py", ["recipes/quickstart.yaml", *overrides,
                                                 "model.width=16", "--resume", "auto"])
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()  # not load_state_dict's 37 lines
    assert "do not fit this config's nets (another architecture; changed: model.width: 8 -> 16)" in line
    assert (run_dir / "config.yaml").read_text() == before


def test_resume_lists_other_changed_keys_and_continues(acgan_run, digits, tmp_path):
    run_dir, overrides = resume_copy(acgan_run, digits, tmp_path)
    result = train("quickstart", *overrides, "train.steps=6", "optim.lr_d=1e-4", resume="auto")
    lines = result.stdout.splitlines()
    start = lines.index("resumed with 2 changed config key(s) (config.yaml now holds the new values):")
    assert lines[start + 1:start + 3] == ["  optim.lr_d: 0.0002 -> 0.0001", "  train.steps: 4 -> 6"]
    assert "lr_d: 0.0001" in (run_dir / "config.yaml").read_text()
    assert json_lines(run_dir)[-1]["step"] == 6


def json_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_judge_fid_without_the_judge_names_the_flag_it_came_from(acgan_run, tmp_path):
    result = script("evaluate", str(acgan_run), "--metrics", "judge_fid", "--classifier", str(tmp_path / "nothing"))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"metric 'judge_fid' is judged by --classifier's classifier run '{tmp_path / 'nothing'}'" in line
