"""Split mode's deal: which samples of an epoch each reader takes, for any number of readers and shards.

Used by stream.py (shards on disk) and cache.py (the same rule over indices held in memory);
`python -m pytest tests/test_readers.py` checks it.

Every epoch the shards are put in one seeded order, the same on every reader, and read as one
sequence of `count` samples (the index's per-shard counts say where each shard starts). Reader r of
R takes the contiguous range [count * r // R, count * (r + 1) // R) of that sequence: every sample
exactly once per epoch across all readers, whatever R is against the number of shards (16 readers on
6 shards take parts of shards; 4 readers on 100 shards take 25 each). A range that starts inside a
shard starts reading at that sample (seeking to it where the index has member offsets), and stops
reading where the range ends, so each reader reads about 1/R of the bytes.

An index without per-shard counts (hand-written) cannot say where a shard's samples fall in that
sequence, so for it the old deal stays: whole shards, reader r reading shards r, r + R, ... of the
order, each reader exactly count // R samples (a short share read again, a long one cut), which needs
a shard per reader; `python -m shards index` writes counts (and offsets) for any shard set.

Ranges differ in length by at most one sample, so readers' epochs do too; batches are cut from each
reader's endless stream, so ranks still take one batch per step each (an epoch boundary may fall a
batch apart on two ranks, which batch["epoch"] shows).
"""
from __future__ import annotations

import itertools
import random


def epoch_order(items: list, seed: int, epoch: int) -> list:
    """The epoch's shard order: seeded, the same on every reader."""
    order = list(items)
    random.Random(f"{seed}/epoch{epoch}").shuffle(order)
    return order


def reader_range(count: int, readers: int, reader: int) -> tuple[int, int]:
    """(first sample, number of samples) of `reader`'s share of an epoch of `count` samples."""
    start, stop = count * reader // readers, count * (reader + 1) // readers
    return start, stop - start


def segments(order: list, counts: list[int], start: int):
    """(shard, first sample in it) from global sample `start` on: the shard holding it, then the next
    ones in order, cycling (a caller whose counts were guessed, not indexed, may need more)."""
    at, first = 0, -1
    for i, n in enumerate(counts):
        if start < at + n:
            yield order[i], start - at
            first = i
            break
        at += n
    while order:  # then every shard after it, from its start, round and round
        for j in range(1, len(order) + 1):
            yield order[(first + j) % len(order)], 0


def reader_length(count: int, readers: int, reader: int, exact: bool) -> int:
    """Samples `reader` takes every epoch: its range (exact: per-shard counts known), else count // readers."""
    return reader_range(count, readers, reader)[1] if exact else count // readers


def reader_shards(items: list, sizes: list[int] | None, count: int, seed: int, epoch: int, readers: int,
                  reader: int):
    """(item, first sample in it) that `reader` reads in `epoch`, without end (its length cuts them).
    `sizes`: the samples of each item (None: unknown, the whole-shard deal)."""
    if sizes is None:
        order = epoch_order(items, seed, epoch)
        return ((item, 0) for item in itertools.cycle(order[reader::readers]))  # a short share is read again
    order = epoch_order(range(len(items)), seed, epoch)
    start = reader_range(count, readers, reader)[0]
    return ((items[k], first) for k, first in segments(order, [sizes[k] for k in order], start))
