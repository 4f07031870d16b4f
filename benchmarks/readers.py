"""Bytes each split-mode reader reads in one epoch, against its share (total / readers), with and without
the per-sample offsets index.json now holds (distgen/data/deal.py: readers seek to their first sample).

    .venv/bin/python benchmarks/readers.py [--images 3000] [--shards 6] [--readers 6 16 64]

Writes --images 32x32 RGB decode-free samples with the converters' ShardSetWriter into --shards shards
(index.json with counts and offsets) in a temporary folder, then for each reader count runs every
reader's epoch (TrainStream._epoch, the samples as the DataLoader workers read them, undecoded) and
counts the bytes read from the shard files. `ratio` = the largest reader's bytes / (total / readers):
1.0 would be a reader reading exactly its share; without offsets a reader reads the start of its first
shard to skip it. Also checks that every sample came once. Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
import distgen.data.tar as tar  # noqa: E402
from benchmarks.common import finish  # noqa: E402
from distgen.config import DataConfig  # noqa: E402
from distgen.data import load_info, split_urls  # noqa: E402
from distgen.data.decoding import Skips  # noqa: E402
from distgen.data.stream import TrainStream, make_transform  # noqa: E402
from shards.writer import ShardSetWriter  # noqa: E402

read = collections.Counter()
_open = tar.open_shard


def counting_open(url):
    """tar.open_shard, counting the bytes read from each shard."""
    stream = _open(url)
    plain = stream.read

    def counted(n=-1):
        data = plain(n)
        read[url] += len(data)
        return data
    stream.read = counted
    return stream


def epoch_bytes(root: Path, readers: int, offsets: bool) -> tuple[list[int], bool]:
    cfg = DataConfig(root=str(root))
    info = load_info(cfg)
    stream = TrainStream(split_urls(info, "train", "t"), 64, make_transform(info, cfg), 0, info.counts["train"],
                         shard_counts=info.shard_counts, shard_offsets=info.shard_offsets if offsets else {})
    per, seen = [], collections.Counter()
    for r in range(readers):
        read.clear()
        seen.update(s["__key__"] for s in stream._epoch(0, r, readers, Skips(1.0, "bench")))
        per.append(sum(read.values()))
    return per, len(seen) == info.counts["train"] and set(seen.values()) == {1}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--readers", type=int, nargs="+", default=[6, 16, 64])
    args = parser.parse_args(argv)
    tar.open_shard = counting_open
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        writer = ShardSetWriter(root, samples_per_shard=-(-args.images // args.shards), encoding="raw")
        for i in range(args.images):
            writer.add("train", f"{i:06d}", Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
        writer.finish(format="bench", image_size=32, channels=3, class_names=[], attr_names=[])
        total = sum(p.stat().st_size for p in root.glob("*.tar"))
        rows = {}
        for readers in args.readers:
            share = total / readers
            row = {}
            for offsets in (True, False):
                per, once = epoch_bytes(root, readers, offsets)
                key = "offsets" if offsets else "no_offsets"
                row[f"max_over_share_{key}"] = round(max(per) / share, 3)
                row[f"mean_over_share_{key}"] = round(sum(per) / len(per) / share, 3)
                row[f"every_sample_once_{key}"] = once
            rows[readers] = row
            print(f"{readers} readers on {args.shards} shards: largest reader {row['max_over_share_offsets']}x its "
                  f"share with offsets, {row['max_over_share_no_offsets']}x without", flush=True)
    worst = max(r["max_over_share_offsets"] for r in rows.values())
    result = {"readers": rows, "images": args.images, "shards": args.shards, "shard_bytes": total}
    finish("readers", worst, **result)
    return result


if __name__ == "__main__":
    main()
