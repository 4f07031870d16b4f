"""Plug-in families (docs/plugins.md): the doc's own hinge-loss GAN, written to a folder outside the repository,
trains on 1 and 2 processes, resumes, sweeps (also as a SLURM array), evaluates from another folder and
reports; its misspelt key and every unusable family name stop with one line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import BIN, ROOT, TINY_CLS, free_port, main_in_process, metrics, run, script

from distgen import recipes
from distgen.errors import ConfigError
from distgen.families.base import Family
from distgen.families.dcgan import DCGAN

RECIPE = """family: hinge_gan:HingeGAN
model: {{z_dim: 16, width: 8, margin: 0.5}}
data: {{root: {root}}}
train: {{steps: 4, batch_size: 16}}
run: {{seed: 0, checkpoint_every: 2}}
log: {{every: 2, sample_every: 4}}
eval: {{every: 0}}
"""


def doc_example() -> str:
    """The one Python block of docs/plugins.md: the example the doc shows is the code these tests run."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "plugins.md").read_text(), re.S)
    assert len(blocks) == 1, "docs/plugins.md should hold exactly one python block, the example family"
    return blocks[0]


@pytest.fixture(scope="module")
def home(digits, tmp_path_factory) -> Path:
    """my_models/: hinge_gan.py (the doc's example) next to its recipe hinge.yaml, outside the repository."""
    home = tmp_path_factory.mktemp("my_models").resolve()
    assert not home.resolve().is_relative_to(ROOT)
    (home / "hinge_gan.py").write_text(doc_example())
    (home / "hinge.yaml").write_text(RECIPE.format(root=digits))
    return home


@pytest.fixture(scope="module")
def judge(digits, tmp_path_factory) -> Path:
    """A 5-step digit classifier: the judge of the judge_fid/coverage metrics (no Inception weights needed)."""
    run_dir = tmp_path_factory.mktemp("judge") / "classifier"
    result = main_in_process("launch/train.py", ["recipes/classifier_digits.yaml", *TINY_CLS, "train.steps=5",
                                                 f"data.root={digits}", f"run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


EVALUATE = ["--metrics", "judge_fid,coverage", "--num-samples", "20"]


def clean_env() -> dict:
    """A new process's environment: this venv first on PATH, only the repository on PYTHONPATH, no GPU."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT),
            "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled"}


def train_py(*argv: str) -> subprocess.CompletedProcess:
    return main_in_process("launch/train.py", list(argv))


def steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in metrics(run_dir) if "G/adv" in r]


def assert_records_the_plugin(run_dir: Path, home: Path, world_size: int) -> None:
    facts = json.loads((run_dir / "run.json").read_text())
    assert facts["family_module"] == "hinge_gan" and facts["family_file"] == str((home / "hinge_gan.py").resolve())
    assert facts["world_size"] == world_size and facts["status"] == "finished"
    assert "family: hinge_gan:HingeGAN" in (run_dir / "config.yaml").read_text()


def test_the_docs_example_is_a_hinge_loss_family_with_its_own_key(home):
    cls = recipes.family_class("hinge_gan:HingeGAN", home)
    assert issubclass(cls, DCGAN) and issubclass(cls, Family) and cls.STYLE == "adversarial"
    cfg = recipes.from_dict({"family": "hinge_gan:HingeGAN", "model": {"margin": 0.5, "z_dim": 8}}, home)
    assert isinstance(cfg.model, cls.ModelConfig) and cfg.model.margin == 0.5 and cfg.model.z_dim == 8
    family = cls(cfg, type("Info", (), {"image_size": 32, "channels": 1})())
    real, fake = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    d = family.d_terms(real, fake)  # max(0, m - D(x)) and max(0, m + D(G(z))), m = 0.5
    assert d["D/real"].item() == pytest.approx((0 + 0.5 + 1.5) / 3) and d["D/fake"].item() == pytest.approx(2 / 3)
    assert family.g_terms(fake)["G/adv"].item() == pytest.approx(-(-2 + 0 + 1) / 3)


def test_a_family_resolved_twice_is_one_class_also_through_a_symlinked_folder(tmp_path, monkeypatch):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "hinge_linked.py").write_text(doc_example())
    (tmp_path / "link").symlink_to(tmp_path / "real")
    monkeypatch.syspath_prepend(str(tmp_path / "link"))
    first = recipes.family_class("hinge_linked:HingeGAN")
    assert recipes.family_class("hinge_linked:HingeGAN") is first
    cfg = recipes.from_dict({"family": "hinge_linked:HingeGAN"})
    assert isinstance(cfg.model, recipes.family_class(cfg.family).ModelConfig)


def test_a_misspelt_key_of_the_plugin_is_one_line_naming_its_keys(home):
    result = train_py(str(home / "hinge.yaml"), "model.margn=1", "--dry-run")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "'model.margn'" in result.stderr and "margin" in result.stderr and "z_dim" in result.stderr
    dry = train_py(str(home / "hinge.yaml"), "model.margin=0.25", "--dry-run")
    assert dry.returncode == 0 and "margin: 0.25" in dry.stdout


def test_unusable_family_names_are_one_line_each(home, tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_dependency\n")
    (tmp_path / "dcgan_copy.py").write_text("from distgen.families.dcgan import DCGAN\n\n\n"
                                            "class Copy(DCGAN):\n    pass\n\n\nclass NotOne:\n    pass\n")
    cases = {"nowhere_module:X": ["'nowhere_module' was not found", "PYTHONPATH", "the working directory",
                                  f"the recipe's folder {tmp_path.resolve()}", "nowhere_module.py"],
             "broken:X": ["importing module 'broken' failed", "ModuleNotFoundError", "no_such_dependency"],
             "dcgan_copy:Missing": ["has no 'Missing'", "dcgan_copy.py", "its family classes: Copy"],
             "dcgan_copy:NotOne": ["is not a family", "distgen.families.base.Family"],
             "dcgn": ["valid families: acgan", "module:Class of a plug-in family"]}
    for name, parts in cases.items():
        with pytest.raises(ConfigError) as err:
            recipes.from_dict({"family": name}, tmp_path)
        message = str(err.value)
        assert "\n" not in message and all(p in message for p in parts), message
    (tmp_path / "bad.yaml").write_text("family: nowhere_module:X\n")
    result = train_py(str(tmp_path / "bad.yaml"))  # and through train.py: one line, exit 2
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "nowhere_module" in result.stderr


def test_one_process_trains_resumes_evaluates_from_elsewhere_and_reports(home, judge, tmp_path):
    run_dir = tmp_path / "hinge"
    first = train_py(str(home / "hinge.yaml"), f"run.dir={run_dir}", "train.steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    again = train_py(str(home / "hinge.yaml"), f"run.dir={run_dir}", "--resume", "auto")
    assert again.returncode == 0, again.stderr[-3000:]
    assert steps(run_dir) == [2, 4] and "resumed from" in again.stdout + again.stderr
    assert all("D/margin_hits" in r for r in metrics(run_dir) if "G/adv" in r)  # the plug-in's loss ran
    assert_records_the_plugin(run_dir, home, world_size=1)

    # a new process in a folder without the module, and no PYTHONPATH to it: run.json leads to it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evaluated = subprocess.run([sys.executable, str(ROOT / "launch" / "evaluate.py"), str(run_dir), *EVALUATE,
                                "--classifier", str(judge)],
                               cwd=elsewhere, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads((run_dir / "eval" / "step_4.json").read_text())
    assert result["judge_num_samples"] == 20 and result["judge_fid"] >= 0

    reported = script("report", str(run_dir))
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert "hinge_gan:HingeGAN" in (run_dir / "report" / "index.md").read_text()

    # and samples from it, from the same foreign folder: images the plug-in's generator drew
    sampled = subprocess.run([sys.executable, str(ROOT / "launch" / "sample.py"), str(run_dir), "--num", "3",
                              "--out", str(elsewhere / "samples"), "--device", "cpu"],
                             cwd=elsewhere, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    assert len(list((elsewhere / "samples").glob("*.png"))) == 3


def test_two_processes_train_resume_and_evaluate(home, judge, tmp_path):
    run_dir = tmp_path / "hinge2"
    two = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no"]
    for args in (["launch/train.py", str(home / "hinge.yaml"), f"run.dir={run_dir}", "train.steps=2"],
                 ["launch/train.py", str(home / "hinge.yaml"), f"run.dir={run_dir}", "--resume", "auto"],
                 ["launch/evaluate.py", str(run_dir), *EVALUATE, "--classifier", str(judge)]):
        result = run([*two, "--main_process_port", str(free_port()), *args], {"ACCELERATE_USE_CPU": "1"}, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        if args[0] == "launch/train.py":
            assert_records_the_plugin(run_dir, home, world_size=2)
    assert steps(run_dir) == [2, 4]
    assert json.loads((run_dir / "eval" / "step_4.json").read_text())["judge_num_samples"] == 20


def test_a_sweep_started_beside_the_module_carries_it_to_its_runs_and_its_slurm_array(home, tmp_path):
    """The recipe in a subfolder and the module only in the caller's working directory: the runs (started in
    the repository) and the SLURM array's tasks get that folder on their PYTHONPATH."""
    (home / "studies").mkdir(exist_ok=True)
    (home / "studies" / "hinge_sweep.yaml").write_text((home / "hinge.yaml").read_text())
    args = [sys.executable, str(ROOT / "launch" / "sweep.py"), "studies/hinge_sweep.yaml", "model.margin=0.5,1.0",
            "train.steps=2", "--name", "margins", "--root", str(tmp_path)]
    env = clean_env()
    swept = subprocess.run([*args, "--local", "--parallel", "2", "--launcher", "python"], cwd=home, env=env,
                           capture_output=True, text=True, timeout=600)
    assert swept.returncode == 0, swept.stdout[-3000:] + swept.stderr[-3000:]
    manifest = json.loads((tmp_path / "margins" / "sweep.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["finished", "finished"]
    for r, margin in zip(manifest["runs"], ("0.5", "1.0")):
        assert f"margin: {margin}" in (Path(r["dir"]) / "config.yaml").read_text()
        assert json.loads((Path(r["dir"]) / "run.json").read_text())["family_file"] == str(home / "hinge_gan.py")
    array = subprocess.run([*args, "--name", "margins_slurm", "--slurm", "--gpus-per-node", "0", "--time", "10",
                            "--dry-run"], cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert array.returncode == 0, array.stderr[-3000:]
    assert f"export PYTHONPATH={home}${{PYTHONPATH:+:$PYTHONPATH}}" in array.stdout, array.stdout
