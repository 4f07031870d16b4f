"""Shard sets: index.json -> DataInfo, and shard URL lists checked before any training step.

    python -m shards digits --out data/digits      # writes data/digits/{train,test}-*.tar + index.json
    python -m shards index /data/my-shards          # indexes shards made by any other tool

The format of index.json and of the samples: docs/data.md.

`data.root` is a shard folder (its index.json lists the shards), or a URL pattern read with
`data.index`: brace patterns (`/shards/train-{000000..000127}.tar`), globs (`/shards/train-*.tar`),
`pipe:` commands (`pipe:aws s3 cp s3://bucket/train-{000000..000127}.tar -`), several joined by `::`.
"""
from __future__ import annotations

import dataclasses
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds

from distgen.errors import ConfigError, DataError


@dataclass(frozen=True)
class DataInfo:
    """What the models need to know about a shard set (from its index.json and the recipe)."""
    image_size: int
    channels: int  # as the models see them: data.channels if set, else as stored
    class_names: tuple[str, ...]
    attr_names: tuple[str, ...]
    splits: dict  # split -> list of shard URLs
    counts: dict  # split -> sample count
    tags: dict = field(default_factory=dict)  # tag vocabularies, e.g. {"hair": [...], "eye": [...]}
    shard_counts: dict = field(default_factory=dict)  # shard URL -> its sample count (when the index has them)
    shard_offsets: dict = field(default_factory=dict)  # shard URL -> byte offset of each sample (when it has them)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _is_pattern(root: str) -> bool:
    return root.startswith("pipe:") or "{" in root or root.endswith(".tar") or any(c in root for c in "*?")


def _is_local(url: str) -> bool:
    return not url.startswith("pipe:") and "://" not in url


def expand_pattern(root: str) -> list[str]:
    """A URL pattern -> the shard URLs it names: `::` lists, braces, then globs of local paths."""
    urls = []
    for url in wds.shardlists.expand_urls(root):
        if _is_local(url) and any(c in url for c in "*?["):
            matches = sorted(glob.glob(url))
            if not matches:
                raise DataError(f"data.root '{root}': '{url}' matches no files; check the path (ls {url})")
            urls += matches
        else:
            urls.append(url)
    return urls


# The converters of `python -m shards` (shards/__main__.py FORMATS; tests/test_data_hints.py keeps the two
# in step): a missing shard folder named like one of them (data/celeba64, data/maps/A) is pointed at it.
CONVERTERS = ("celeba", "faces", "anime", "mnistm", "usps", "svhn", "maps", "digits", "digits-m", "folder")
EMBEDDED = ("digits", "digits-m")  # take no --src
ROOT_KEYS = ("source", "target", "domain_a", "domain_b")  # data.* keys that name a shard folder besides root


def root_key(data_cfg) -> str:
    """The recipe key that named `data_cfg.root`: the loops pass each stream's folder as a copy of data with
    root replaced (data.target, data.domain_a, ...), and errors must name the key the user set."""
    return next((f"data.{k}" for k in ROOT_KEYS if getattr(data_cfg, k, "") == data_cfg.root), "data.root")


def converter_hint(root: str) -> str:
    """The command that makes the shard folder `root`: the converter its name suggests (data/celeba64 ->
    celeba, data/maps/A -> maps), else the list of converters and `folder` for one's own images."""
    path = Path(root)
    if path.name in ("A", "B") and path.parent.name.lower().rstrip("0123456789_-") == "maps":
        return f"`python -m shards maps --src RAW_DIR --out {path.parent}` (it writes {path.parent}/A and /B)"
    stem = path.name.lower() if path.name.lower() in CONVERTERS else path.name.lower().rstrip("0123456789_-")
    if stem in CONVERTERS and stem not in ("maps", "folder"):
        return f"`python -m shards {stem}{'' if stem in EMBEDDED else ' --src RAW_DIR'} --out {root}`"
    return (f"`python -m shards FORMAT --src RAW_DIR --out {root}` (FORMAT: "
            f"{', '.join(c for c in CONVERTERS if c != 'folder')}), or for your own images "
            f"`python -m shards folder --src IMAGES --out {root}`")


def load_info(data_cfg, split_for_pattern: str = "train") -> DataInfo:
    """Read index.json of `data.root` (a folder), or of `data.index` when root is a URL pattern."""
    root, key = data_cfg.root, root_key(data_cfg)
    if _is_pattern(root):
        index_path = Path(data_cfg.index) if data_cfg.index else Path(root.split("::")[0]).parent / "index.json"
    else:
        index_path = Path(root) / "index.json"
    if not index_path.is_file():
        if _is_pattern(root):
            hint = (f"set data.index=PATH/index.json, or make one for these shards with "
                    f"`python -m shards index '{root}' --out {index_path}`")
        elif Path(root).is_dir():
            hint = f"make one for the shards in it with `python -m shards index {root}`"
        else:
            hint = f"the folder does not exist; point {key} at a shard folder, or make it with {converter_hint(root)}"
        raise DataError(f"{key} '{root}': no index.json at '{index_path}'; {hint}")
    try:
        index = json.loads(index_path.read_text())
        splits = {s: [str(index_path.parent / name) for name in v["shards"]] for s, v in index["splits"].items()}
        counts = {s: int(v["count"]) for s, v in index["splits"].items()}
        shard_counts, shard_offsets = {}, {}
        for s, v in index["splits"].items():
            if "counts" in v:  # per shard, in the order of "shards"
                if len(v["counts"]) != len(v["shards"]) or sum(v["counts"]) != counts[s]:
                    raise ValueError(f"split '{s}': 'counts' must give one count per shard, summing to 'count'")
                shard_counts.update(zip(splits[s], map(int, v["counts"])))
            if "offsets" in v:  # per shard, the byte offset where each of its samples starts
                if "counts" not in v or [len(o) for o in v["offsets"]] != [int(n) for n in v["counts"]]:
                    raise ValueError(f"split '{s}': 'offsets' must give one list per shard, one offset per sample")
                shard_offsets.update(zip(splits[s], v["offsets"]))
        info = DataInfo(int(index["image_size"]), int(index["channels"]), tuple(index.get("class_names", ())),
                        tuple(index.get("attr_names", ())), splits, counts, dict(index.get("tags", {})),
                        shard_counts, shard_offsets)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"'{index_path}' is not a valid shard index ({exc}); rebuild it with "
                        f"`python -m shards index {index_path.parent}`")
    if _is_pattern(root):  # the pattern names the training shards directly
        urls = expand_pattern(root)
        indexed = info.splits.get(split_for_pattern, [])
        # The index counts the whole split; a pattern naming a subset of its shards is taken to hold
        # a proportional share (exact when it names them all, the usual case: same shards, other access).
        count = info.counts.get(split_for_pattern, 0) * len(urls) // max(len(indexed), 1)
        if info.shard_counts and all(u in info.shard_counts for u in urls):
            count = sum(info.shard_counts[u] for u in urls)
        info = dataclasses.replace(info, splits={**info.splits, split_for_pattern: urls},
                                   counts={**info.counts, split_for_pattern: count})
    missing = [a for a in getattr(data_cfg, "attrs", ()) if a not in info.attr_names]
    if missing:
        raise DataError(f"data.attrs: '{missing[0]}' is not an attribute of '{index_path}'; it has: "
                        f"{', '.join(info.attr_names) or 'no attributes'}")
    if getattr(data_cfg, "attrs", ()):  # the selected attributes, in the recipe's order, are the model's
        info = dataclasses.replace(info, attr_names=tuple(data_cfg.attrs))
    crop = getattr(data_cfg, "crop", 0)
    if crop > info.image_size:
        raise ConfigError(f"'data.crop' is {crop} px but the shards in '{index_path.parent}' hold "
                          f"{info.image_size} px images; use a crop <= {info.image_size}")
    if getattr(data_cfg, "channels", 0):  # grey <-> RGB conversion happens in the stream
        info = dataclasses.replace(info, channels=data_cfg.channels)
    return info


def split_urls(info: DataInfo, split: str, key: str) -> list[str]:
    if split not in info.splits or not info.splits[split]:
        have = [s for s, urls in info.splits.items() if urls]
        urls = next((u for u in info.splits.values() if u), [])
        folder = Path(urls[0]).parent if urls and _is_local(urls[0]) else Path("DIR")
        fix = f"set {key} to one of them"
        if key == "data.eval_split":  # evaluation needs held-out images the set was made without
            fix = (f"set data.eval_split to one of them (data.eval_split={have[0] if have else 'train'} "
                   f"evaluates on training images), or give the set a {split} split: "
                   f"`python -m shards index {folder} --split {split}='PATTERN'` for shards of another tool "
                   f"(a glob naming the held-out shards), or convert again with a test split "
                   f"(`python -m shards folder ... --test-fraction 0.1`)")
        raise DataError(f"{key}: split '{split}' has no shards; the index in '{folder}' has: "
                        f"{', '.join(have) or 'no split with shards'}; {fix}")
    return info.splits[split]


def check_urls(urls: list[str]) -> None:
    """Local shards must exist before training starts (remote and pipe: ones are tried when read)."""
    if not urls:
        raise DataError("no shard URLs: data.root names no shards; point it at a folder made by `python -m shards`")
    missing = [u for u in urls if _is_local(u) and not Path(u).is_file()]
    if missing:
        raise DataError(f"shard '{missing[0]}' does not exist ({len(missing)} of {len(urls)} missing); fix "
                        f"data.root (or data.index), or rebuild the folder with `python -m shards FORMAT --out DIR`")


def split_count(info: DataInfo, urls: list[str]) -> int:
    """Samples in `urls` by the index: the split they are, or a proportional share of the split
    that holds them all."""
    urls = list(urls)
    for split, shards in info.splits.items():
        if list(shards) == urls:
            return info.counts[split]
    if info.shard_counts and all(u in info.shard_counts for u in urls):
        return sum(info.shard_counts[u] for u in urls)
    for split, shards in info.splits.items():
        if set(urls) <= set(shards):
            return info.counts[split] * len(urls) // len(shards)
    raise DataError(f"the shards {urls[:2]}... are in no split of the index; pass split_urls(info, split, key)")
