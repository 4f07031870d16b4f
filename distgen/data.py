"""Shard streams: WebDataset tar shards -> batch dicts {"image": [-1,1] NCHW float, "label": long, ...}.

Used by the loops; a shard folder is made with `python -m shards digits --out data/digits`.

- `load_info(cfg.data)` reads index.json (image size, channels, class names, splits).
- `train_loader(...)` is an infinite, seeded stream of full batches for one rank. It resumes at
  any batch count: `start_batch` tells each DataLoader worker how many of its own batches to pass
  over, so N steps + resume + M steps sees the same data as N+M steps.
- `eval_batches(...)` walks a split exactly once across all ranks (sample j goes to rank j % world).

WebDataset reads the tars, URLs (`pipe:`, brace patterns), shuffles and decodes. The shard order
per epoch and the rank/worker split are ours: WebDataset's own splitters draw unseeded shuffles and
keep no position, and a resumable, identical-on-rerun stream is what exact resume needs.
"""
from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distgen.errors import DataError


@dataclass(frozen=True)
class DataInfo:
    """What the models need to know about a shard set (from its index.json)."""
    image_size: int
    channels: int
    class_names: tuple[str, ...]
    attr_names: tuple[str, ...]
    splits: dict  # split -> list of shard URLs
    counts: dict  # split -> sample count
    tags: dict = field(default_factory=dict)  # tag vocabularies, e.g. {"hair": [...], "eye": [...]}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _is_pattern(root: str) -> bool:
    return root.startswith("pipe:") or "{" in root or root.endswith(".tar")


def load_info(data_cfg, split_for_pattern: str = "train") -> DataInfo:
    """Read index.json of `data.root` (a folder), or of `data.index` when root is a URL pattern."""
    root = data_cfg.root
    if _is_pattern(root):
        index_path = Path(data_cfg.index) if data_cfg.index else Path(root.split("::")[0]).parent / "index.json"
    else:
        index_path = Path(root) / "index.json"
    if not index_path.is_file():
        hint = ("make one with `python -m shards digits --out data/digits` or point data.root at a shard "
                "folder" if not _is_pattern(root) else "set data.index=PATH/index.json")
        raise DataError(f"data.root '{root}': no index.json at '{index_path}'; {hint}")
    try:
        index = json.loads(index_path.read_text())
        splits = {s: [str(index_path.parent / name) for name in v["shards"]] for s, v in index["splits"].items()}
        counts = {s: int(v["count"]) for s, v in index["splits"].items()}
        info = DataInfo(int(index["image_size"]), int(index["channels"]), tuple(index.get("class_names", ())),
                        tuple(index.get("attr_names", ())), splits, counts, dict(index.get("tags", {})))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"'{index_path}' is not a valid shard index ({exc!r}); rebuild it with `python -m shards`")
    if _is_pattern(root):  # the pattern names the training shards directly
        splits = dict(info.splits)
        splits[split_for_pattern] = list(wds.shardlists.expand_urls(root))
        info = DataInfo(info.image_size, info.channels, info.class_names, info.attr_names, splits, info.counts,
                        info.tags)
    missing = [a for a in getattr(data_cfg, "attrs", ()) if a not in info.attr_names]
    if missing:
        raise DataError(f"data.attrs: '{missing[0]}' is not an attribute of '{index_path}'; it has: "
                        f"{', '.join(info.attr_names) or 'no attributes'}")
    if getattr(data_cfg, "attrs", ()):  # the selected attributes, in the recipe's order, are the model's
        info = DataInfo(info.image_size, info.channels, info.class_names, tuple(data_cfg.attrs), info.splits,
                        info.counts, info.tags)
    return info


def split_urls(info: DataInfo, split: str, key: str) -> list[str]:
    if split not in info.splits or not info.splits[split]:
        raise DataError(f"{key}: split '{split}' has no shards; the index has: {', '.join(info.splits)}")
    return info.splits[split]


class _Decode:
    """Decoded WebDataset sample -> tensors on the [-1, 1] scale at the requested size."""

    def __init__(self, channels: int, size: int, attrs: tuple[str, ...] = ()):
        self.spec = {1: "torchl", 3: "torchrgb"}.get(channels)
        if self.spec is None:
            raise DataError(f"index.json says channels={channels}; supported: 1 (grey) or 3 (RGB)")
        self.size, self.attrs = size, attrs

    def __call__(self, sample: dict) -> dict:
        image = next(sample[k] for k in ("png", "jpg", "jpeg") if k in sample)
        if image.ndim == 2:
            image = image[None]
        if image.shape[-1] != self.size:
            image = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear",
                                  antialias=True, align_corners=False)[0]
        out = {"image": image * 2.0 - 1.0}
        if "cls" in sample:
            out["label"] = torch.tensor(int(sample["cls"]), dtype=torch.long)
        attrs = (sample.get("json") or {}).get("attrs")
        if attrs:
            values = [attrs[a] for a in self.attrs] if self.attrs else list(attrs.values())
            out["attrs"] = torch.tensor(values, dtype=torch.float32)
        return out


def _collate(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


class TrainStream(IterableDataset):
    """Infinite stream of full batches for one rank; each DataLoader worker is one consumer."""

    def __init__(self, urls, batch_size, channels, image_size, seed, rank=0, world_size=1,
                 shuffle_buffer=512, start_batch=0, attrs=()):
        self.urls, self.batch_size, self.seed = list(urls), batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer, self.start_batch = shuffle_buffer, start_batch
        self.decode = _Decode(channels, image_size, attrs)

    def _shards(self, consumer: int, n_consumers: int):
        """Epoch after epoch: one seeded shard order shared by all consumers, each taking its share."""
        for epoch in itertools.count():
            order = list(self.urls)
            random.Random(f"{self.seed}/epoch{epoch}").shuffle(order)
            mine = order[consumer::n_consumers] if len(order) >= n_consumers else order
            yield from ({"url": u} for u in mine)

    def __iter__(self):
        worker = get_worker_info()
        n_workers = worker.num_workers if worker else 1
        # The DataLoader takes batches from its workers round-robin starting at worker 0, so global
        # batch b is made by role b % n_workers. After resuming at start_batch, worker w plays the
        # role that made batch start_batch + w, having already made `skip` batches in that role.
        role = ((worker.id if worker else 0) + self.start_batch) % n_workers
        skip = max(0, (self.start_batch - role + n_workers - 1) // n_workers)
        consumer, n_consumers = self.rank * n_workers + role, self.world_size * n_workers
        samples = wds.tarfile_to_samples()(self._shards(consumer, n_consumers))
        if len(self.urls) < n_consumers:  # fewer shards than consumers: all read all, keep every n-th
            samples = (s for j, s in enumerate(samples) if j % n_consumers == consumer)
        rng = random.Random(f"{self.seed}/consumer{consumer}")
        samples = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(samples)
        samples = itertools.islice(samples, skip * self.batch_size, None)  # resume: pass over, no decode
        samples = wds.decode(wds.imagehandler(self.decode.spec))(samples)
        batch = []
        for sample in samples:
            batch.append(self.decode(sample))
            if len(batch) == self.batch_size:
                yield _collate(batch)
                batch = []


def train_loader(urls, batch_size, info: DataInfo, data_cfg, seed, rank, world_size, start_batch=0,
                 pin_memory=False) -> DataLoader:
    size = data_cfg.image_size or info.image_size
    stream = TrainStream(urls, batch_size, info.channels, size, seed, rank, world_size,
                         data_cfg.shuffle_buffer, start_batch, data_cfg.attrs)
    workers = data_cfg.num_workers
    # Own generator: creating the iterator must not draw from the global RNG that training uses.
    return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))


def eval_batches(urls, batch_size, info: DataInfo, image_size=0, rank=0, world_size=1, attrs=()):
    """Each sample of the split exactly once across ranks, in shard order; the last batch may be short."""
    decode = _Decode(info.channels, image_size or info.image_size, attrs)
    samples = wds.tarfile_to_samples()({"url": u} for u in urls)
    samples = (s for j, s in enumerate(samples) if j % world_size == rank)
    samples = wds.decode(wds.imagehandler(decode.spec))(samples)
    batch = []
    for sample in samples:
        batch.append(decode(sample))
        if len(batch) == batch_size:
            yield _collate(batch)
            batch = []
    if batch:
        yield _collate(batch)
