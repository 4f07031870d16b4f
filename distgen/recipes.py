"""Recipes by family name: a YAML file (or dict) -> the typed Config of that family.

    python launch/train.py recipes/quickstart.yaml optim.lr_d=1e-4 train.steps=500 --dry-run

The one module that knows both the config schema (distgen.config) and the family registry
(distgen.families), so neither imports the other's registry: families import distgen.config
for their sections, and distgen.config never imports a family.

`family_class(cfg.family)` is THE way from a family name to its class, for built-in names
(`dcgan`) and plug-in families (`my_module:MyGAN`, distgen/plugins.py) alike: nothing else
indexes FAMILIES with a recipe's family.
"""
from __future__ import annotations

from pathlib import Path

from distgen import config, plugins
from distgen.config import Config
from distgen.errors import ConfigError
from distgen.families import FAMILIES


def family_class(name, recipe_dir: str | Path | None = None):
    """The family class of a recipe's `family`: a built-in name, or `module:Class` of a plug-in family
    (imported from PYTHONPATH, the working directory or `recipe_dir`; distgen/plugins.py)."""
    if plugins.is_plugin(name):
        return plugins.import_family(name, recipe_dir)
    if name not in FAMILIES:
        raise ConfigError(f"family '{name}' is not known; valid families: {', '.join(sorted(FAMILIES))}, "
                          f"or module:Class of a plug-in family (docs/plugins.md)")
    return FAMILIES[name]


def from_dict(raw: dict, recipe_dir: str | Path | None = None) -> Config:
    """The typed, checked config of a raw recipe dict; the family's ModelConfig types `model`.
    `recipe_dir`: the folder a plug-in family's module may also be in (the recipe's)."""
    return config.build(raw, family_class(raw.get("family"), recipe_dir))


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a recipe file, apply `key=value` overrides, and type-check the result."""
    return from_dict(config.read(path, overrides), Path(path).parent)
