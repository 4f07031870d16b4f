"""Training and evaluation streams over WebDataset shards, for one rank and its DataLoader workers.

    accelerate launch launch/train.py recipes/quickstart.yaml data.mode=resampled data.hflip=true

Every (rank, DataLoader worker) pair is a *reader*: world_size x max(num_workers, 1) of them
(data.num_workers=-1, the default: from the CPUs, workers.py). Batches are cut from each reader's
continuous stream, so one may hold the end of an epoch and the start of the next; batch["epoch"] says
which epoch each sample belongs to. Workers hand over uint8 images; device.py scales them on the
training device.

- `split` (default): each epoch one seeded shard order, the same on all readers, is read as one
  sequence of samples, and reader r takes its contiguous range of it (deal.py): every sample exactly
  once per epoch across all readers, for any number of readers and shards (16 readers on 6 shards
  included). A reader seeks to its first sample by the offsets in index.json (without them it reads
  the start of that shard and passes over it) and stops at its range's end, so it reads about
  1/readers of the bytes (benchmarks/readers.py). Ranges differ by at most one sample, and so do the
  readers' epochs. An index without per-shard counts gets the old whole-shard deal (deal.py), which
  needs a shard per reader.
- `resampled`: every reader draws shards with replacement (seeded by seed, epoch and reader) until
  it has count // readers samples; the unread rest of its last draw is left out. For large shard sets
  and elastic jobs.

Within an epoch each reader shuffles through a seeded buffer (data.shuffle_buffer) that is emptied
at the epoch's end. Resuming at `start_batch` turns the batch count into (epoch, offset): earlier
epochs are not read at all; the first `offset` samples of the current one are read and passed over
without decoding.

Bad input: a truncated or unreadable shard ends early; a corrupt image gives its place to the next
good sample (so the sample count, the epochs and resume stay exact). Each is warned and counted in
batch["skipped"] (see Skips). A shard read to its end that holds more or fewer samples than index.json
says, a sample without the label the index promises, or one whose members are apart stops the run
with a DataError naming the shard (and key): those would silently skip, repeat or mislabel data.

`data.cache=ram|device` serves the same batches from memory instead: cache.py.

WebDataset opens the URLs (local, `pipe:`, http) and does the buffer shuffle; tar.py parses the
tars (why, there). The shard deal and the epoch cut/pad are ours: WebDataset's split_by_node,
split_by_worker and with_epoch cut a stream but never pad a short one, its splitters draw unseeded
shuffles, and neither they nor ResampledShards keep a position to resume from.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import random

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distgen.data.deal import reader_length, reader_shards
from distgen.data.index import DataInfo, check_urls, split_count
from distgen.data.decoding import Skips, Transform
from distgen.data.tar import read_shard
from distgen.data.workers import resolve_workers
from distgen.errors import DataError


class TrainStream(IterableDataset):
    """Infinite stream of full batches for one rank; each DataLoader worker is one reader."""

    def __init__(self, urls, batch_size: int, transform: Transform, seed: int, count: int, rank: int = 0,
                 world_size: int = 1, mode: str = "split", shuffle_buffer: int = 512, start_batch: int = 0,
                 max_skip_fraction: float = 0.01, shard_counts: dict | None = None, shard_offsets: dict | None = None):
        self.urls, self.batch_size, self.transform = list(urls), batch_size, transform
        self.seed, self.count, self.rank, self.world_size, self.mode = seed, count, rank, world_size, mode
        self.shuffle_buffer, self.start_batch, self.max_skip_fraction = shuffle_buffer, start_batch, max_skip_fraction
        self.shard_counts = shard_counts or {}  # url -> count from the index: checked as each shard is read
        self.shard_offsets = shard_offsets or {}  # url -> byte offset of each sample: a reader seeks to its first
        # the deal by samples needs every shard's count (deal.py); without, whole shards are dealt
        self.sizes = [self.shard_counts[u] for u in self.urls] if all(u in self.shard_counts for u in self.urls) \
            else None

    def length(self, reader: int, readers: int) -> int:
        """Samples `reader` takes every epoch."""
        return reader_length(self.count, readers, reader, self.mode == "split" and self.sizes is not None)

    def _shards(self, epoch: int, reader: int, readers: int):
        """(shard, first sample to read in it) that `reader` reads in `epoch`, without end (the epoch's
        length cuts them): split mode per deal.py, resampled mode whole shards drawn with replacement."""
        if self.mode == "split":
            return reader_shards(self.urls, self.sizes, self.count, self.seed, epoch, readers, reader)
        rng = random.Random(f"{self.seed}/resampled/{epoch}/{reader}")
        return ((rng.choice(self.urls), 0) for _ in itertools.count())

    def _epoch(self, epoch: int, reader: int, readers: int, skips: Skips):
        """Exactly length(reader) raw samples: `reader`'s share of `epoch`, shuffled."""
        length = self.length(reader, readers)

        def raw():
            taken = dry = 0
            for url, first in self._shards(epoch, reader, readers):
                before = taken
                for sample in read_shard(url, skips, self.shard_counts.get(url), first, self.shard_offsets.get(url)):
                    yield sample
                    taken += 1
                    if taken == length:
                        return
                dry = dry + 1 if taken == before else 0
                if dry > len(self.urls):
                    raise DataError(f"data: {dry} shards in a row gave rank {self.rank} no sample (last: {url}); "
                                    f"check the shards of data.root")

        rng = random.Random(f"{self.seed}/shuffle/{epoch}/{reader}")
        return wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(raw())

    def __iter__(self):
        worker = get_worker_info()
        n_workers = worker.num_workers if worker else 1
        # The DataLoader takes batches from its workers round-robin starting at worker 0, so global
        # batch b is made by role b % n_workers. After resuming at start_batch, worker w plays the
        # role that made batch start_batch + w, having already made `done` batches in that role.
        role = ((worker.id if worker else 0) + self.start_batch) % n_workers
        done = max(0, (self.start_batch - role + n_workers - 1) // n_workers)
        readers, reader = self.world_size * n_workers, self.rank * n_workers + role
        per_reader = self.length(reader, readers)
        slot = done * self.batch_size  # samples this reader has handed out so far
        first, offset = divmod(slot, per_reader)
        skips = Skips(self.max_skip_fraction, f"rank {self.rank} worker {role}")

        def samples():
            for epoch in itertools.count(first):
                stream = self._epoch(epoch, reader, readers, skips)
                if epoch == first and offset:  # resume: pass over what was handed out, no decode
                    collections.deque(itertools.islice(stream, offset), maxlen=0)
                    skips.take()  # those skips were counted before the resume
                yield from stream

        images, flips, fields, rng, pending = [], [], [], None, 0
        for sample in samples():
            try:
                image, extra = self.transform.decode(sample)
            except DataError:  # a label missing or apart from its image: the data is wrong, not damaged
                raise
            except Exception as exc:  # anything unreadable in one sample: skip it, never stop the run
                skips.skip(f"sample {sample.get('__key__')} of {sample.get('__url__')}", exc)
                pending += 1  # its place goes to the next good sample
                continue
            for _ in range(pending + 1):
                if not images and self.transform.random:  # one seeded draw per batch: batches start at
                    rng = random.Random(hash((self.seed, reader, slot)))  # multiples of batch_size, so resume-exact
                image_placed, flip = self.transform.place(image, rng)
                images.append(image_placed)
                flips.append(flip)
                fields.append({**extra, "epoch": slot // per_reader})
                slot += 1
                if len(images) == self.batch_size:
                    batch = self.transform.batch(images, flips, fields, normalize=False)  # uint8: device.py
                    batch["epoch"] = torch.tensor([f["epoch"] for f in fields])
                    batch["skipped"] = torch.tensor(skips.take())
                    yield batch
                    images, flips, fields = [], [], []
            pending = 0


class Batches:
    """A DataLoader whose workers' DataErrors come out as the one-line DataError they were: the
    DataLoader re-raises a worker's exception with the worker's whole traceback in its message."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __iter__(self):
        try:
            yield from self.loader
        except DataError as exc:
            text = str(exc)
            if "Original Traceback" not in text:
                raise
            raise DataError(text.rstrip().splitlines()[-1].split("DataError: ", 1)[-1]) from None


def make_transform(info: DataInfo, data_cfg=None, image_size: int = 0, attrs=(), crop: int = 0) -> Transform:
    """The recipe's transform for this shard set; training's (random crop, flip) when `data_cfg` is given."""
    promised = dict(labels=bool(info.class_names), has_attrs=bool(info.attr_names))
    if data_cfg is None:
        return Transform(info.channels, image_size or info.image_size, attrs, crop, **promised)
    return Transform(info.channels, data_cfg.image_size or info.image_size, data_cfg.attrs, data_cfg.crop,
                     data_cfg.random_crop, data_cfg.hflip, **promised)


def train_loader(urls, batch_size, info: DataInfo, data_cfg, seed, rank, world_size, start_batch=0,
                 pin_memory=False, device=None):
    """Batches {"image", "label"?, "attrs"?, "epoch", "skipped"} for this rank, without end. Fails here,
    before any training step, on a missing shard or too few shards for the readers. With data.cache
    ram or device (on `device`), the batches come from memory (cache.py) and are the same."""
    urls = list(urls)
    check_urls(urls)
    workers = resolve_workers(data_cfg.num_workers)  # -1: from the CPUs this process has
    data_cfg = dataclasses.replace(data_cfg, num_workers=workers)  # data.cache plays as many readers
    readers = world_size * max(workers, 1)
    count = split_count(info, urls)
    where = f"{world_size} rank(s) x {max(workers, 1)} worker(s) = {readers} readers"
    if count < readers:
        raise DataError(f"data.root '{data_cfg.root}': {count} samples for {where}; use fewer workers or ranks")
    if data_cfg.mode == "split" and len(urls) < readers and not all(u in info.shard_counts for u in urls):
        raise DataError(f"data.root '{data_cfg.root}': {len(urls)} shards for {where}, and its index.json has no "
                        f"per-shard 'counts': without them split mode deals whole shards and needs a shard per "
                        f"reader. Index the shards (`python -m shards index DIR`: any number of readers then), "
                        f"lower data.num_workers, or set data.mode=resampled")
    transform = make_transform(info, data_cfg)
    if data_cfg.cache != "none":
        from distgen.data.cache import CachedBatches

        return CachedBatches(urls, batch_size, transform, seed, count, rank, world_size, data_cfg,
                             start_batch, info, device if data_cfg.cache == "device" else torch.device("cpu"))
    stream = TrainStream(urls, batch_size, transform, seed, count, rank, world_size, data_cfg.mode,
                         data_cfg.shuffle_buffer, start_batch, data_cfg.max_skip_fraction, info.shard_counts,
                         info.shard_offsets)
    # Own generator: creating the iterator must not draw from the global RNG that training uses.
    return Batches(DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                              persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed)))


def eval_batches(urls, batch_size, info: DataInfo, image_size=0, rank=0, world_size=1, attrs=(), crop=0,
                 max_skip_fraction=0.01):
    """Each sample of the split exactly once across ranks, in shard order; no random transforms.

    Sample j of the split goes to rank j % world_size: ranks below count % world_size hold one sample
    more, and a rank may have one batch fewer (the last batch may be short), so reduce sums and
    counts once at the end, never per batch. A corrupt sample is skipped with a warning (its rank
    holds one fewer); every rank reads every shard, so all agree on j."""
    check_urls(list(urls))
    transform = make_transform(info, image_size=image_size, attrs=attrs, crop=crop)
    skips = Skips(max_skip_fraction, f"eval, rank {rank}")
    images, fields = [], []
    for j, sample in enumerate(s for url in urls for s in read_shard(url, skips, info.shard_counts.get(url))):
        if j % world_size != rank:
            continue
        try:
            image, extra = transform.decode(sample)
        except DataError:
            raise
        except Exception as exc:  # anything unreadable in one sample: skip it, count it
            skips.skip(f"sample {sample.get('__key__')} of {sample.get('__url__')}", exc)
            continue
        images.append(transform.place(image)[0])
        fields.append(extra)
        if len(images) == batch_size:
            yield transform.batch(images, [False] * len(images), fields)
            images, fields = [], []
    if images:
        yield transform.batch(images, [False] * len(images), fields)
