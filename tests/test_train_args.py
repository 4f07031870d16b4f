"""launch/train.py's command line: overrides after flags, and the recipe-key wording of the
InceptionV3-weights error (both before any training or data reading)."""
from __future__ import annotations

import sys


from conftest import ROOT

sys.path.insert(0, str(ROOT / "launch"))
from train import main as train_main  # noqa: E402


def test_overrides_are_accepted_after_flags(capsys):
    recipe = str(ROOT / "recipes" / "quickstart.yaml")
    assert train_main([recipe, "--dry-run", "train.steps=7", "optim.lr_d=1e-4"]) == 0
    after = capsys.readouterr().out
    assert "steps: 7" in after and "lr_d: 0.0001" in after
    assert train_main([recipe, "train.steps=7", "--dry-run", "optim.lr_d=1e-4"]) == 0  # and between them
    assert capsys.readouterr().out == after


def test_missing_inception_weights_name_the_recipe_keys(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("DISTGEN_INCEPTION_WEIGHTS", raising=False)
    recipe = str(ROOT / "recipes" / "dcgan_digits_smoke.yaml")
    assert train_main([recipe, "--resume", "auto", "eval.every=5", f"run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: FID/IS/KID/PRC need InceptionV3 weights") and err.count("\n") == 1
    assert "eval.inception_weights=PATH" in err and "eval.every=0" in err and "--inception-weights" not in err
    assert not (tmp_path / "run").exists()
