"""Is a config's data there? The shards every stream of a run reads, checked as training's start checks
them (index.json, the split's shards on disk), without starting anything.

    python launch/sweep.py RECIPE key=a,b --local     # checks every run's data before launching any

launch/sweep.py calls it for every run of a grid, so a wrong data.root stops the sweep at once with
the run and the file named, instead of failing N runs in turn.
"""
from __future__ import annotations

import dataclasses

from distgen.data.index import check_urls, load_info, split_urls
from distgen.errors import ConfigError


def roots(cfg, family_cls) -> dict[str, tuple[str, str]]:
    """name -> (shard folder, split) of every stream a run of `cfg` opens at start: the adversarial loop's
    training streams (data.root, or the family's STREAMS fields), the single-objective loop's training
    and evaluation streams (the family's `streams`, e.g. DANN's source and target)."""
    data = cfg.data
    if family_cls.STYLE == "adversarial":
        fields = dict(family_cls.STREAMS) or {"": "root"}
        out = {}
        for name, field in fields.items():
            if not getattr(data, field):
                raise ConfigError(f"family '{cfg.family}' reads data.{field}, which is empty; set "
                                  f"{' and '.join('data.' + f for f in fields.values())}")
            out[f"data.{field}"] = (getattr(data, field), data.train_split)
        return out
    return {f"{which} {name}".strip(): (root, data.train_split if which == "train" else data.eval_split)
            for which in ("train", "eval") for name, root in family_cls.streams(cfg, which).items()}


def check(cfg, family_cls) -> None:
    """A DataError or ConfigError naming the key and the file when a stream's shards are not there."""
    for name, (root, split) in roots(cfg, family_cls).items():
        info = load_info(dataclasses.replace(cfg.data, root=root))
        key = "data.train_split" if split == cfg.data.train_split else "data.eval_split"
        check_urls(split_urls(info, split, key))
