"""Features of the real split, the reference for FID/KID/PRC, cached on disk keyed by content.

The cache key hashes what the features depend on: the bytes of index.json and of the split's
shard files, the split and image size, the extractor, its feature layers and the weights file's
bytes. A rebuilt dataset or other weights therefore never reuse stale features, whatever the
paths are called. Each rank reads its share of the split (distgen.data.eval_batches); the rows
are gathered back into the split's order, so one process and N processes score the same set.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
import torch_fidelity
from tqdm import tqdm

from distgen.data import eval_batches, split_urls
from distgen.evaluation.inception import (EXTRACTOR, FEATURE_DIMS, as_rgb, extract, file_sha256, save_pngs,
                                          to_uint8)
from distgen.evaluation.ranks import Gather, gather_rows

CACHE_ENV = "DISTGEN_CACHE_DIR"


def default_cache_dir() -> Path:
    """$DISTGEN_CACHE_DIR, else ~/.cache/distgen: reference features, reused by every run on this data."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "distgen").expanduser()


def index_file(data_cfg) -> Path:
    """The index.json that distgen.data.load_info reads for `data_cfg` (same rule)."""
    root = data_cfg.root
    if root.startswith("pipe:") or "{" in root or root.endswith(".tar"):
        return Path(data_cfg.index) if data_cfg.index else Path(root.split("::")[0]).parent / "index.json"
    return Path(root) / "index.json"


def cache_key(data_cfg, urls: list[str], split: str, image_size: int, layers: list[str], weights: Path) -> dict:
    """Everything the reference features depend on, by content; its hash names the cache file."""
    shards = [file_sha256(u) if Path(u).is_file() else f"url:{u}" for u in urls]  # remote shards: by name only
    return {"index_sha256": file_sha256(index_file(data_cfg)), "shards_sha256": shards, "split": split,
            "image_size": image_size, "crop": data_cfg.crop, "extractor": EXTRACTOR, "layers": sorted(layers),
            "weights_sha256": file_sha256(weights), "torch_fidelity": torch_fidelity.__version__}


def reference_features(net, layers: list[str], data_cfg, info, image_size: int, weights: Path, *,
                       batch_size: int = 64, rank: int = 0, world_size: int = 1, gather: Gather,
                       cache_dir: str | Path | None = None, save_dir: str | Path | None = None,
                       log=None) -> dict[str, torch.Tensor]:
    """{layer: features of every image of data.eval_split, in split order}, on every rank."""
    split = data_cfg.eval_split
    urls = split_urls(info, split, "data.eval_split")
    key = cache_key(data_cfg, urls, split, image_size, layers, weights) if cache_dir else None  # hashing takes time
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    cache = Path(cache_dir) / f"reference-{digest}.pt" if cache_dir else None
    # Every rank must take the same branch (the other one gathers), so hit means a hit on all ranks.
    here = cache is not None and save_dir is None and cache.is_file()
    if bool(gather(torch.tensor([int(here)])).cpu().min()):
        if rank == 0 and log:
            log(f"reference features: cached in {cache}")
        return torch.load(cache, map_location="cpu", weights_only=True)["features"]

    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    local: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    seen = 0
    batches = eval_batches(urls, batch_size, info, image_size, rank=rank, world_size=world_size,
                           crop=data_cfg.crop)  # the real images as training sees them (centre crop)
    total = -(-info.counts.get(split, 0) // (world_size * batch_size)) or None
    for batch in tqdm(batches, desc=f"reference features ({split})", unit="batch", total=total,
                      disable=rank != 0, mininterval=5.0):  # a long quiet step on a big split: show progress
        images = to_uint8(batch["image"])
        if save_dir:  # item j of this rank is item j * world + rank of the split
            save_pngs(images, range(seen * world_size + rank, (seen + len(images)) * world_size, world_size),
                      Path(save_dir))
        seen += len(images)
        for layer, value in extract(net, as_rgb(images), batch_size).items():
            if layer in local:  # the net may also compute layers only the generated side needs
                local[layer].append(value)
    features = {layer: gather_rows(torch.cat(v) if v else torch.zeros(0, FEATURE_DIMS[layer]), gather,
                                   world_size, interleaved=True) for layer, v in local.items()}
    if rank == 0 and cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save({"features": features, "key": key}, tmp)
        os.replace(tmp, cache)  # atomic: a reader never sees half a file
    if rank == 0 and log:
        log(f"reference features: computed from {len(next(iter(features.values())))} images of split "
            f"'{split}'" + (f", cached in {cache}" if cache else ""))
    return features
