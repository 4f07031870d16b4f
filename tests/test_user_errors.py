"""What a new user tripped on: one clear line instead of a traceback or a silent surprise.

Optimiser keys out of range, `--metrics acc` without its judge, compare.py's figure in the current
directory, and `--resume auto` under another recipe or architecture."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import ROOT, TINY_CLS, TINY_GAN, main_in_process, script, train

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
