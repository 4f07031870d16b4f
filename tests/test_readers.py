"""Split mode with any number of readers for any number of shards (distgen/data/deal.py): every sample exactly
once per epoch across all readers, exact resume, readers that seek to their first sample and read about
1/readers of the bytes, and indexes without offsets (read and skip) or without counts (whole-shard deal).

Fixtures are shard sets written by the converters' own ShardSetWriter (index.json with counts and offsets),
6 shards of unequal size, where sample `id` has class `id`, so labels say exactly which samples a reader saw.
"""
from __future__ import annotations

import collections
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

import distgen.data.tar as tar_module
from distgen.config import DataConfig
from distgen.data import load_info, split_urls, train_loader
from distgen.data.deal import reader_range, segments
from distgen.data.decoding import Skips
from distgen.data.stream import TrainStream, make_transform
from distgen.errors import DataError
from shards.__main__ import main as shards_main
from shards.writer import ShardSetWriter

COUNT, PER_SHARD = 53, 10  # 6 shards: 10, 10, 10, 10, 10, 3


def write_set(out, count=COUNT, per_shard=PER_SHARD, encoding="raw"):
    writer = ShardSetWriter(out, samples_per_shard=per_shard, encoding=encoding)
    rng = np.random.default_rng(0)
    for i in range(count):
        writer.add("train", f"s{i:05d}", Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)), cls=i)
    writer.finish(format="ids", image_size=8, channels=1, class_names=[str(i) for i in range(count)], attr_names=[])
    return out


@pytest.fixture(scope="module")
def six(tmp_path_factory):
    return write_set(tmp_path_factory.mktemp("readers") / "six")


def stream_for(root, world=1, rank=0, **kw) -> TrainStream:
    cfg = DataConfig(root=str(root), shuffle_buffer=4)
    info = load_info(cfg)
    urls = split_urls(info, "train", "data.train_split")
    return TrainStream(urls, 4, make_transform(info, cfg), 1, info.counts["train"], rank, world, "split", 4,
                       shard_counts=info.shard_counts, shard_offsets=info.shard_offsets, **kw)


def epoch_labels(stream: TrainStream, epoch: int, reader: int, readers: int) -> list[int]:
    return [int(s["cls"]) for s in stream._epoch(epoch, reader, readers, Skips(0.5, "test"))]


def test_deal_ranges_cover_the_epoch_once():
    for count, readers in ((53, 16), (53, 8), (7, 7), (100, 3)):
        ranges = [reader_range(count, readers, r) for r in range(readers)]
        assert sum(n for _, n in ranges) == count and all(n >= count // readers for _, n in ranges)
        assert [s for s, _ in ranges] == [sum(n for _, n in ranges[:r]) for r in range(readers)]
    assert list(itertools.islice(segments(["a", "b", "c"], [10, 10, 3], 15), 5)) == \
        [("b", 5), ("c", 0), ("a", 0), ("b", 0), ("c", 0)]


@pytest.mark.parametrize("readers", [8, 16, 6, 5, 1])  # 2 ranks x 4 workers; 16 readers on 6 shards; ...
def test_every_sample_exactly_once_per_epoch(six, readers):
    stream = stream_for(six)
    seen = {}
    for epoch in (0, 1, 2):
        labels = [lab for r in range(readers) for lab in epoch_labels(stream, epoch, r, readers)]
        counts = collections.Counter(labels)
        assert sorted(counts) == list(range(COUNT)) and set(counts.values()) == {1}, (readers, epoch)
        seen[epoch] = [epoch_labels(stream, epoch, r, readers) for r in range(readers)]
    if readers > 1:  # the deal changes every epoch
        assert seen[0] != seen[1] != seen[2]


def test_two_ranks_of_four_workers_through_the_dataloader_and_exact_resume(six):
    """The real DataLoader path: rank r's 4 workers are readers 4r..4r+3; resuming mid-epoch at batch 5
    gives the very batches of the uninterrupted stream."""
    cfg = DataConfig(root=str(six), shuffle_buffer=4, num_workers=4)
    info = load_info(cfg)
    urls = split_urls(info, "train", "data.train_split")
    batches = {rank: list(itertools.islice(iter(train_loader(urls, 3, info, cfg, 1, rank, 2)), 12)) for rank in (0, 1)}
    epoch0 = collections.Counter(int(lab) for rank in (0, 1) for b in batches[rank]
                                 for lab, e in zip(b["label"], b["epoch"]) if e == 0)
    assert sorted(epoch0) == list(range(COUNT)) and set(epoch0.values()) == {1}
    resumed = list(itertools.islice(iter(train_loader(urls, 3, info, cfg, 1, 1, 2, start_batch=5)), 6))
    for a, b in zip(batches[1][5:11], resumed):
        for key in ("image", "label", "epoch"):
            assert torch.equal(a[key], b[key]), key


def count_bytes(monkeypatch) -> dict:
    """Bytes read per shard URL by every read_shard from here on."""
    read = collections.Counter()
    original = tar_module.open_shard

    def counting(url):
        stream = original(url)
        plain = stream.read

        def read_and_count(n=-1):
            data = plain(n)
            read[url] += len(data)
            return data
        stream.read = read_and_count
        return stream
    monkeypatch.setattr(tar_module, "open_shard", counting)
    return read


def test_readers_seek_to_their_first_sample_and_read_their_share(six, monkeypatch):
    stream, readers = stream_for(six), 16
    total = sum(p.stat().st_size for p in six.glob("train-*.tar"))
    per = []
    for r in range(readers):
        read = count_bytes(monkeypatch)
        epoch_labels(stream, 0, r, readers)
        per.append(sum(read.values()))
    # each reader reads its ~3.3 samples (plus the header block it stops on), not whole shards of 10
    assert max(per) < 2.5 * total / readers, (per, total)
    assert sum(per) < 1.6 * total


def test_an_index_without_offsets_reads_and_skips_exactly_the_same(six, tmp_path, monkeypatch):
    old = tmp_path / "old"
    old.mkdir()
    for tar in six.glob("*.tar"):
        (old / tar.name).symlink_to(tar)
    index = json.loads((six / "index.json").read_text())
    del index["splits"]["train"]["offsets"]
    (old / "index.json").write_text(json.dumps(index))
    with_offsets, without = stream_for(six), stream_for(old)
    read = count_bytes(monkeypatch)
    for r in range(8):
        assert epoch_labels(with_offsets, 1, r, 8) == epoch_labels(without, 1, r, 8)
    assert sum(v for u, v in read.items() if str(old) in u) > sum(v for u, v in read.items() if str(six) in u)


def test_offsets_that_do_not_match_the_shard_are_a_data_error(six, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for tar in six.glob("*.tar"):
        (bad / tar.name).symlink_to(tar)
    index = json.loads((six / "index.json").read_text())
    index["splits"]["train"]["offsets"] = [[o + 100 for o in shard] for shard in index["splits"]["train"]["offsets"]]
    (bad / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"no sample starts at byte .*python -m shards index"):
        for r in range(16):
            epoch_labels(stream_for(bad), 0, r, 16)


def test_shards_index_writes_the_writers_offsets(six, tmp_path):
    out = tmp_path / "index.json"
    assert shards_main(["index", str(six), "--out", str(out), "--workers", "1"]) == 0
    made, written = json.loads(out.read_text()), json.loads((six / "index.json").read_text())
    assert made["splits"]["train"]["offsets"] == written["splits"]["train"]["offsets"]
    assert made["splits"]["train"]["counts"] == [10, 10, 10, 10, 10, 3]


def test_without_counts_more_readers_than_shards_is_refused_with_the_fix(six, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for tar in six.glob("*.tar"):
        (bare / tar.name).symlink_to(tar)
    index = json.loads((six / "index.json").read_text())
    for key in ("offsets", "counts"):
        del index["splits"]["train"][key]
    (bare / "index.json").write_text(json.dumps(index))
    cfg = DataConfig(root=str(bare), num_workers=4)
    info = load_info(cfg)
    with pytest.raises(DataError, match=r"6 shards for 2 rank\(s\) x 4 worker\(s\) = 8 readers.*"
                                        r"python -m shards index"):
        train_loader(split_urls(info, "train", "t"), 3, info, cfg, 1, 0, 2)


def test_cache_on_two_processes_takes_each_sample_of_its_share_once_per_epoch(six):
    """data.cache=ram, 2 processes x 2 roles: each process deals its own shards (rank, rank + 2, ...) over its
    roles by samples, so an epoch of a process is its share exactly once, and the processes are disjoint."""
    cfg = DataConfig(root=str(six), shuffle_buffer=4, cache="ram", num_workers=2)
    info = load_info(cfg)
    urls = split_urls(info, "train", "t")
    shares = []
    for rank in (0, 1):
        share = sum(info.shard_counts[u] for u in urls[rank::2])  # 30 and 23
        epochs = collections.defaultdict(list)
        for b in itertools.islice(iter(train_loader(urls, 3, info, cfg, 1, rank, 2)), share // 3 + 2):
            for lab, e in zip(b["label"].tolist(), b["epoch"].tolist()):
                epochs[e].append(lab)
        assert len(epochs[0]) == share and len(set(epochs[0])) == share, (rank, epochs[0])
        shares.append(set(epochs[0]))
    assert not shares[0] & shares[1] and len(shares[0] | shares[1]) == COUNT
