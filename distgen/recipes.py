"""Recipes by family name: a YAML file (or dict) -> the typed Config of that family.

    python launch/train.py recipes/quickstart.yaml optim.lr_d=1e-4 train.steps=500 --dry-run

The one module that knows both the config schema (distgen.config) and the family registry
(distgen.families), so neither imports the other's registry: families import distgen.config
for their sections, and distgen.config never imports a family.
"""
from __future__ import annotations

from pathlib import Path

from distgen import config
from distgen.config import Config
from distgen.errors import ConfigError
from distgen.families import FAMILIES


def family_class(name):
    if name not in FAMILIES:
        raise ConfigError(f"family '{name}' is not known; valid families: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def from_dict(raw: dict) -> Config:
    """The typed, checked config of a raw recipe dict; the family's ModelConfig types `model`."""
    return config.build(raw, family_class(raw.get("family")))


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a recipe file, apply `key=value` overrides, and type-check the result."""
    return from_dict(config.read(path, overrides))
