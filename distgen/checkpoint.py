"""Reading a run's checkpoints without Accelerate: rebuild the family and load its nets by name.

    cfg, family, step = load_run("runs/quickstart/20261122-101500", "latest")

Checkpoints are accelerate `save_state` folders plus `meta.json`, which names the file of each
net (and of the generator EMA) and records what the nets were built for (image size, classes).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from distgen import config, plugins, recipes
from distgen.data import DataInfo
from distgen.errors import ConfigError


def info_to_meta(info: DataInfo) -> dict:
    return {"image_size": info.image_size, "channels": info.channels,
            "class_names": list(info.class_names), "attr_names": list(info.attr_names), "tags": info.tags}


def _info(d: dict):
    """DataInfo (or a dict of them, for families with several streams) from meta.json."""
    if "image_size" not in d:
        return {key: _info(v) for key, v in d.items()}
    return DataInfo(d["image_size"], d["channels"], tuple(d["class_names"]), tuple(d["attr_names"]), {}, {},
                    d.get("tags", {}))


def resolve_checkpoint(run_dir: str | Path, checkpoint: str = "latest") -> Path:
    run_dir = Path(run_dir)
    named = checkpoint == "latest" or checkpoint.startswith("step_")
    ckpt = run_dir / "checkpoints" / checkpoint if named else Path(checkpoint)
    if not (ckpt / "meta.json").is_file():
        raise ConfigError(f"no checkpoint at '{ckpt}' (meta.json missing); train first, or pass "
                          f"--checkpoint latest|step_<N>|PATH")
    return ckpt.resolve()


def plugin_folder(run_dir: Path) -> Path | None:
    """Where the run's plug-in family module was imported from (run.json's family_module and family_file),
    so evaluate.py and friends find it from any folder; None for built-in families and older runs."""
    try:
        facts = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    module, file = facts.get("family_module"), facts.get("family_file")
    return plugins.import_root(module, file) if module and file else None


def load_run(run_dir: str | Path, checkpoint: str = "latest", device: str | torch.device = "cpu",
             use_ema: bool = True):
    """(config, family with loaded nets in eval-ready state, step) of a run's checkpoint."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"'{run_dir}' is not a run dir (no config.yaml); pass the folder train.py printed")
    cfg = recipes.from_dict(config.upgrade(yaml.safe_load(cfg_path.read_text())), plugin_folder(run_dir))
    ckpt = resolve_checkpoint(run_dir, checkpoint)
    meta = json.loads((ckpt / "meta.json").read_text())
    info = _info(meta["data_info"])
    family = recipes.family_class(cfg.family)(cfg, info, device)
    for name, file in meta["family_nets"].items():
        family.nets[name].load_state_dict(load_file(str(ckpt / file), device=str(device)))
    ema_file = meta["custom"].get("ema")
    if use_ema and ema_file:
        state = torch.load(ckpt / ema_file, map_location=device, weights_only=True)
        weights = {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}
        family.nets[family.GENERATOR].load_state_dict(weights)
    for net in family.nets.values():
        net.to(device)
    return cfg, family, int(meta["step"])
