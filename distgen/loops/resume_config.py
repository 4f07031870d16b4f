"""What a resume changes: the checkpoint's run config (its config.yaml) against this start's config.

    accelerate launch launch/train.py RECIPE.yaml run.dir=DIR --resume auto [key=value ...]

A resume continues the nets it finds, so it must be the same model: another family is refused before
anything is loaded, with every changed key in one message; so is another architecture (model.* or
data.* keys that change the nets' shapes, e.g. model.width), found when the checkpoint's weights do
not fit the nets this config builds (only the built nets know their shapes). Every other change
(optim.*, train.steps, log.*, ...) is allowed and listed when the run resumes, one line per key;
config.yaml then holds the new values. run.dir is left out: it names the folder, not the run.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from distgen import config as config_mod
from distgen.errors import ConfigError

IGNORED = ("run.dir", "run.accept_new_data_order")  # where the run lives, and a flag checked on its own
SHOWN = 8  # changed keys named in a refusal before "and N more"


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def changes(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every key whose value differs (a key on one side only: '(none)' on the other)."""
    before, after = flat(old), flat(new)
    keys = [k for k in dict.fromkeys([*before, *after]) if k not in IGNORED]
    return [f"{k}: {before.get(k, '(none)')} -> {after.get(k, '(none)')}"
            for k in keys if before.get(k, "(none)") != after.get(k, "(none)")]


def listing(items: list[str]) -> str:
    shown = "; ".join(items[:SHOWN])
    return shown + (f"; and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def check(cfg, ckpt: Path) -> list[str]:
    """The keys this start changes against the run that wrote `ckpt` (RUN/checkpoints/step_<N>); another
    family is a ConfigError. No config.yaml next to the checkpoint: nothing to compare, nothing listed."""
    path = Path(ckpt).parent.parent / "config.yaml"
    try:
        old = config_mod.upgrade(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError):
        return []
    new = config_mod.to_dict(cfg)
    changed = changes(old, new)
    if old.get("family") != new["family"]:
        raise ConfigError(
            f"--resume: {ckpt} was trained as family '{old.get('family')}' (recipe '{old.get('recipe', '?')}'), "
            f"this config is family '{new['family']}' (recipe '{new['recipe']}'); a run cannot change family "
            f"(changed: {listing(changed)}). Resume with the run's own recipe, or start a new run with another "
            f"run.dir=...")
    return changed


def architecture_error(ckpt: Path, changed: list[str]) -> ConfigError:
    """The checkpoint's weights do not fit the nets of this config: name the keys that can change shapes."""
    shaping = [c for c in changed if c.startswith(("model.", "data."))] or changed
    return ConfigError(
        f"--resume: the nets in {ckpt} do not fit this config's nets (another architecture; changed: "
        f"{listing(shaping) or 'no model key: the checkpoint comes from other code'}). Resume with the run's "
        f"own model keys, or start a new run with another run.dir=...")
