"""Digits shards and the shard stream: seeded split, resumable position, each eval sample once."""
from __future__ import annotations

import io
import itertools
import json
import tarfile
from dataclasses import replace

import numpy as np
import pytest
import torch

from distgen.config import DataConfig
from distgen.data import eval_batches, load_info, split_urls, to_device, train_loader
from distgen.errors import DataError
from distgen.evaluation.inception import to_uint8
from shards.__main__ import main as shards_main


def test_digits_index_describes_the_shards(digits):
    index = json.loads((digits / "index.json").read_text())
    assert index["image_size"] == 32 and index["channels"] == 1
    assert index["class_names"] == [str(d) for d in range(10)]
    assert index["splits"]["train"]["count"] + index["splits"]["test"]["count"] == 1797  # all of sklearn's digits
    assert index["skipped"]["count"] == 0
    for split, entry in index["splits"].items():
        keys = []
        for name in entry["shards"]:
            with tarfile.open(digits / name) as tar:
                keys += sorted({m.name.split(".")[0] for m in tar.getmembers()})
        assert len(keys) == entry["count"] and not any("." in k for k in keys)
    assert not list(digits.glob(".*partial"))


def test_split_is_seeded_and_disjoint(digits, tmp_path):
    assert shards_main(["digits", "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "index.json").read_text() == (digits / "index.json").read_text()
    info = load_info(DataConfig(root=str(digits)))
    sources = {}
    for split in ("train", "test"):
        sources[split] = set()
        for name in info.splits[split]:
            with tarfile.open(name) as tar:
                sources[split] |= {m.name.split(".")[0] for m in tar.getmembers()}
    assert not sources["train"] & sources["test"]


def _take(loader, n):
    return list(itertools.islice(iter(loader), n))


@pytest.mark.parametrize("workers, start", [(0, 5), (2, 5), (2, 6)])
def test_stream_resumes_where_it_stopped(digits, workers, start):
    info = load_info(DataConfig(root=str(digits)))
    cfg = DataConfig(root=str(digits), num_workers=workers, shuffle_buffer=64)
    urls = split_urls(info, "train", "data.train_split")
    whole = _take(train_loader(urls, 32, info, cfg, seed=3, rank=0, world_size=1), start + 3)
    resumed = _take(train_loader(urls, 32, info, cfg, seed=3, rank=0, world_size=1, start_batch=start), 3)
    for a, b in zip(whole[start:], resumed):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(whole[0]["label"], whole[1]["label"])  # not the same batch again and again
    batch = to_device(whole[0], "cpu")  # as the loops take it: uint8 scaled to [-1, 1]
    assert batch["image"].shape == (32, 1, 32, 32) and batch["image"].min() >= -1 and batch["image"].max() <= 1


def test_ranks_see_different_samples(digits):
    info = load_info(DataConfig(root=str(digits)))
    cfg = DataConfig(root=str(digits), shuffle_buffer=64)
    urls = split_urls(info, "train", "x")
    a = _take(train_loader(urls, 32, info, cfg, seed=0, rank=0, world_size=2), 2)
    b = _take(train_loader(urls, 32, info, cfg, seed=0, rank=1, world_size=2), 2)
    assert not torch.equal(a[0]["image"], b[0]["image"])


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_split_is_seen_exactly_once_across_ranks(digits, world):
    info = load_info(DataConfig(root=str(digits)))
    urls = split_urls(info, "test", "data.eval_split")
    seen = [b["image"] for r in range(world) for b in eval_batches(urls, 50, info, rank=r, world_size=world)]
    seen = to_uint8(torch.cat(seen))
    assert len(seen) == info.counts["test"] and seen.shape[1] == 1
    # the reference is read from the shards themselves (tarfile + numpy), not by another walk of eval_batches:
    # the same multiset of one-channel pixel arrays, so every test image exactly once over the ranks
    reference = []
    for url in urls:
        with tarfile.open(url) as tar:
            reference += [np.load(io.BytesIO(tar.extractfile(m).read())).astype(np.uint8).tobytes()
                          for m in tar.getmembers() if m.name.endswith(".npy")]
    assert len(reference) == info.counts["test"]
    assert sorted(r.numpy().tobytes() for r in seen) == sorted(reference)


def test_missing_index_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataError, match="python -m shards"):
        load_info(DataConfig(root=str(tmp_path)))


def test_unknown_split_names_the_valid_ones(digits):
    info = load_info(DataConfig(root=str(digits)))
    with pytest.raises(DataError, match="train, test"):
        split_urls(info, "validation", "data.eval_split")


def test_image_size_override_resizes(digits):
    info = load_info(DataConfig(root=str(digits)))
    cfg = replace(DataConfig(root=str(digits)), image_size=16, shuffle_buffer=8)
    batch = to_device(_take(train_loader(split_urls(info, "train", "x"), 4, info, cfg, 0, 0, 1), 1)[0], "cpu")
    assert batch["image"].shape == (4, 1, 16, 16)
