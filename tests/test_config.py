"""Recipes: every recipe resolves; bad keys, values and family names fail with messages naming them."""
from __future__ import annotations

import dataclasses
import sys

import pytest
import yaml

from conftest import ROOT, script
from distgen import config, recipes
from distgen.errors import ConfigError
from distgen.families import FAMILIES

sys.path.insert(0, str(ROOT / "launch"))
import train as train_entry  # noqa: E402  (launch/train.py, the real entry point)

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_there_are_recipes_for_every_family():
    families = {yaml.safe_load(p.read_text())["family"] for p in RECIPES}
    assert set(FAMILIES) <= families


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_dry_runs(recipe, capsys):
    assert train_entry.main([str(recipe), "--dry-run"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["family"] == yaml.safe_load(recipe.read_text())["family"]
    for key in ("root",):
        assert key in printed["data"]
    for section, key in [("train", "steps"), ("train", "batch_size"), ("run", "dir"), ("run", "seed"),
                         ("run", "checkpoint_every"), ("log", "every"), ("log", "sample_every"), ("eval", "every")]:
        assert key in printed[section]


def test_dry_run_through_the_script_prints_overrides():
    result = script("train", "recipes/quickstart.yaml", "optim.lr_d=1e-4", "train.steps=500", "--dry-run")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["optim"]["lr_d"] == pytest.approx(1e-4)
    assert printed["train"]["steps"] == 500


def test_unknown_key_names_the_key_and_the_valid_choices():
    result = script("train", "recipes/quickstart.yaml", "optim.lr_x=1", "--dry-run")
    assert result.returncode != 0
    assert "optim.lr_x" in result.stderr and "lr_d" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_wrong_type_names_the_key_and_the_value():
    result = script("train", "recipes/quickstart.yaml", "optim.lr_d=fast", "--dry-run")
    assert result.returncode != 0
    assert "optim.lr_d" in result.stderr and "fast" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("override, words", [
    ("family=stylegan9", ["stylegan9", "acgan", "dcgan", "classifier"]),
    ("optim.name=lion", ["optim.name", "adam", "rmsprop", "sgd"]),
    ("train.steps=2.5", ["train.steps", "integer"]),
    ("train.steps=0", ["train.steps", "> 0"]),
    ("model.depth=3", ["model.depth", "z_dim"]),
    ("train.phases=[{name: X}]", ["X", "D", "G"]),
    ("log.wandb.enabled=maybe", ["log.wandb.enabled", "true or false"]),
])
def test_bad_values_raise_config_errors_naming_them(override, words):
    with pytest.raises(ConfigError) as err:
        recipes.load(ROOT / "recipes" / "quickstart.yaml", [override])
    for word in words:
        assert word in str(err.value)


def test_overrides_are_typed_and_the_tree_is_frozen():
    cfg = recipes.load(ROOT / "recipes" / "quickstart.yaml",
                       ["optim.lr_g=1e-4", "train.ema_kimg=10", "train.phases=[{name: D, repeat: 5}, {name: G}]"])
    assert isinstance(cfg.optim.lr_g, float) and cfg.optim.lr_g == 1e-4
    assert cfg.train.phases[0] == config.PhaseConfig("D", 5, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr_g = 1.0  # type: ignore[misc]
    assert recipes.from_dict(yaml.safe_load(config.dump(cfg))) == cfg  # config.yaml round-trips


def test_missing_recipe_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        recipes.load(tmp_path / "nope.yaml")
