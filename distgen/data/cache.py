"""data.cache=ram|device: a process's share of the training split in one uint8 tensor, served as batches.

    python launch/train.py recipes/dcgan_celeba.yaml data.cache=device     # CelebA 64x64 is 2.5 GB of uint8

At start each process reads its share of the split's shards once (decoded, at the stored size, in the
recipe's channels) into one N x C x H x W uint8 tensor, in host memory (`ram`) or on the training
device (`device`), with the labels and attributes beside it. Batches are then cut from it without
decoding or DataLoader workers: the indices are gathered, and the crop and flip (then, in device.py,
the scale to [-1, 1] and resize) run on the whole batch where it lives (on the GPU for `device`).

Same guarantees as the stream (stream.py), by the same rules run over sample indices instead of
samples: split mode's deal (deal.py: each reader, rank x data.num_workers role, its contiguous range of
the epoch's shard order), a seeded shuffle buffer (WebDataset's own `shuffle`, fed indices), flips and
crops drawn from the same per-batch seeds, batches from the roles round-robin as from DataLoader
workers, and resuming at a batch count replays no decoding. Batches hold uint8 images, gathered,
cropped and flipped where the tensor lives; device.py scales them there. With one process the
batches equal the stream's batch for batch (tests/test_cache.py). With several, each process holds a
fixed share of the shards (shards rank, rank + world, ...; at least one each) and deals it among its
readers every epoch: processes see disjoint samples, each of its share once an epoch.

When the share would not fit (host: MemAvailable across this machine's processes; device: free
memory), it stops before reading with the sizes and the alternatives.
"""
from __future__ import annotations

import itertools
import os
import random
import time

import torch
import webdataset as wds

from distgen.data.deal import reader_length, reader_shards
from distgen.data.decoding import Skips, Transform, log
from distgen.data.tar import read_shard
from distgen.errors import DataError

PROGRESS_EVERY = 10  # seconds between progress lines while reading the share
HEADROOM = 0.8  # the share may take at most this fraction of the memory that is free now


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def available_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes free now, where) on `device`: the GPU's free memory, or the host's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {device}"
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024, "of host memory available"
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "of host memory free"


class CachedBatches:
    """Iterable of batches for one rank from its share held in memory (see the module docstring)."""

    def __init__(self, urls, batch_size: int, transform: Transform, seed: int, count: int, rank: int,
                 world_size: int, data_cfg, start_batch: int, info, device: torch.device | None):
        self.device = torch.device(device or "cpu")
        self.all_urls = list(urls)
        self.urls = self.all_urls[rank::world_size]  # this process's share of the shards
        self.batch_size, self.transform, self.seed, self.count = batch_size, transform, seed, count
        self.rank, self.world_size, self.mode = rank, world_size, data_cfg.mode
        self.shuffle_buffer, self.start_batch = data_cfg.shuffle_buffer, start_batch
        self.roles = max(data_cfg.num_workers, 1)  # the readers the stream would have on this rank
        self.where = f"data.cache={data_cfg.cache} (rank {rank})"
        if not self.urls:
            raise DataError(f"{self.where}: {len(self.all_urls)} shards for {world_size} processes, and each process "
                            f"caches whole shards (shards rank, rank + world, ...); write at least one shard per "
                            f"process (`python -m shards FORMAT ... --samples-per-shard N`) or use data.cache=none")
        self.skips = Skips(data_cfg.max_skip_fraction, self.where)
        self._load(info)

    def _load(self, info) -> None:
        if info.shard_counts and all(u in info.shard_counts for u in self.urls):
            share = sum(info.shard_counts[u] for u in self.urls)
        else:  # an index without per-shard counts: an even share (the tensor grows if it is more)
            share = -(-self.count * len(self.urls) // len(self.all_urls))
        side, channels = info.image_size, self.transform.channels
        need = share * side * side * channels
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size if self.device.type == "cpu" else 1))
        free, what = available_bytes(self.device)
        if need * local > HEADROOM * free:
            many = f" x {local} processes on this machine = {gib(need * local)}" if local > 1 else ""
            raise DataError(f"{self.where}: this process's share is {share} images of {side}x{side}x{channels} "
                            f"uint8 = {gib(need)}{many}, more than {int(HEADROOM * 100)}% of the {gib(free)} "
                            f"{what}; use data.cache=none (stream the shards), "
                            + ("data.cache=ram, " if self.device.type == "cuda" else "")
                            + "more processes or machines, or smaller images")
        images = torch.empty((share, side, side, channels), dtype=torch.uint8)
        labels, attrs, self.shards, n = [], [], {}, 0
        show, last = self.rank == 0, time.monotonic()
        for i, url in enumerate(self.urls):
            first = n
            for sample in read_shard(url, self.skips, info.shard_counts.get(url)):
                try:
                    image, fields = self.transform.decode(sample)
                except DataError:
                    raise
                except Exception as exc:  # unreadable: left out of the cache, counted in the first batch
                    self.skips.skip(f"sample {sample.get('__key__')} of {url}", exc)
                    continue
                if tuple(image.shape) != (side, side, channels):
                    raise DataError(f"{self.where}: sample '{sample['__key__']}' of '{url}' is "
                                    f"{'x'.join(map(str, image.shape))}, the index says {side}x{side}x{channels}; "
                                    f"the cache needs one image size (rebuild the index: `python -m shards index`)")
                if n == len(images):  # more than the index said: grow (the count check names the shard)
                    images = torch.cat([images, torch.empty_like(images[:max(1, n // 4)])])
                images[n] = image
                labels.append(fields.get("label", 0))
                if "attrs" in fields:
                    attrs.append(fields["attrs"])
                n += 1
            self.shards[url] = range(first, n)
            if show and time.monotonic() - last > PROGRESS_EVERY:
                last = time.monotonic()
                log.warning(f"{self.where}: read {i + 1}/{len(self.urls)} shards, {n} images")
        # the deal counts shards by the index, as the stream does; without counts it deals whole shards
        self.sizes = [info.shard_counts[u] for u in self.urls] \
            if all(u in info.shard_counts for u in self.all_urls) else None
        self.images = images[:n].permute(0, 3, 1, 2).contiguous().to(self.device)  # N C H W: batches need no permute
        self.labels = torch.tensor(labels, dtype=torch.long).to(self.device) if self.transform.labels else None
        self.attrs = torch.tensor(attrs, dtype=torch.float32).to(self.device) if attrs and len(attrs) == n else None
        if show:
            log.warning(f"{self.where}: {n} images, {gib(self.images.numel())} on {self.device}")

    # The stream's rules (stream.py TrainStream._shards / _epoch, deal.py), over indices into self.images.
    def _shard_order(self, epoch: int, total: int, dealt: int, deal: int, reader: int):
        """(shard, first sample in it) of reader `deal` of `dealt` over this process's shards."""
        if self.mode == "split":
            return reader_shards(self.urls, self.sizes, total, self.seed, epoch, dealt, deal)
        rng = random.Random(f"{self.seed}/resampled/{epoch}/{reader}")
        return ((rng.choice(self.urls), 0) for _ in itertools.count())

    def _epoch(self, epoch: int, deal: tuple, reader: int, per_reader: int):
        def raw():
            taken = dry = 0
            for url, first in self._shard_order(epoch, *deal, reader):
                before = taken
                for index in self.shards[url][first:]:
                    yield index
                    taken += 1
                    if taken == per_reader:
                        return
                dry = dry + 1 if taken == before else 0
                if dry > len(self.urls):
                    raise DataError(f"{self.where}: {dry} shards in a row hold no sample (last: {url})")

        rng = random.Random(f"{self.seed}/shuffle/{epoch}/{reader}")
        return wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(raw())

    def _role(self, role: int):
        """The batches one reader makes, as (indices, crop/flip choices, epochs), from where resume left it."""
        n = self.roles
        done = max(0, (self.start_batch - role + n - 1) // n)
        readers, reader = self.world_size * n, self.rank * n + role
        # One process: the stream's deal of the split over its readers. Several: this process's shards
        # dealt over its own readers (role of roles).
        if self.world_size == 1:
            total, dealt, deal = self.count, readers, reader
        else:
            total, dealt, deal = sum(self.sizes) if self.sizes else self.count, n, role
        exact = self.mode == "split" and self.sizes is not None
        per_reader = reader_length(total, dealt, deal, True) if exact else self.count // readers
        if per_reader < 1:
            raise DataError(f"{self.where}: {total} samples in this process's share for {dealt} readers "
                            f"(data.num_workers); use fewer workers")
        slot = done * self.batch_size
        first, offset = divmod(slot, per_reader)

        def indices():
            for epoch in itertools.count(first):
                stream = self._epoch(epoch, (total, dealt, deal), reader, per_reader)
                if epoch == first and offset:
                    stream = itertools.islice(stream, offset, None)
                yield from stream

        side = self.images.shape[2]
        rng, batch, choices, epochs = None, [], [], []
        for index in indices():
            if not batch and self.transform.random:
                rng = random.Random(hash((self.seed, reader, slot)))  # the stream's per-batch seed
            batch.append(index)
            choices.append(self.transform.choose(side, side, rng))
            epochs.append(slot // per_reader)
            slot += 1
            if len(batch) == self.batch_size:
                yield batch, choices, epochs
                batch, choices, epochs = [], [], []

    def _to_device(self, values: list) -> torch.Tensor:
        """A small host list on the cache's device. On a GPU through pinned memory and non_blocking, so
        the copy queues behind the training step instead of waiting for it (no host sync)."""
        if self.device.type != "cuda":
            return torch.tensor(values, device=self.device)
        return torch.tensor(values).pin_memory().to(self.device, non_blocking=True)

    def _make(self, batch: list[int], choices: list[tuple], epochs: list[int]) -> dict:
        """One uint8 batch where the tensor lives: gather, crop, flip, as Transform.batch does on the same
        pixels; device.py scales and resizes it as it does the stream's, so the values are the stream's."""
        dev = self.device
        ids = self._to_device(batch)
        images = torch.index_select(self.images, 0, ids)  # N C H W uint8, a copy
        top, left, c, _ = choices[0]
        if c and self.transform.random_crop:
            images = torch.stack([im[:, t:t + c, l:l + c] for im, (t, l, _, _) in zip(images, choices)])
        elif c:
            images = images[:, :, top:top + c, left:left + c]
        flips = [ch[3] for ch in choices]
        if any(flips) and dev.type == "cuda":  # one kernel over the batch
            images = torch.where(self._to_device(flips)[:, None, None, None], images.flip(3), images)
        elif any(flips):  # on a CPU, row by row is cheaper than index_copy_ or where over the batch
            for i in (i for i, f in enumerate(flips) if f):
                images[i] = images[i].flip(2)  # images is our own copy
        out = {"image": images}  # uint8, scaled where it lives by device.py (the stream's arithmetic)
        if tuple(images.shape[-2:]) != (self.transform.size, self.transform.size):
            out["resize"] = torch.tensor(self.transform.size)  # on the host: device.py reads it there
        if self.labels is not None:
            out["label"] = self.labels[ids]
        if self.attrs is not None:
            out["attrs"] = self.attrs[ids]
        out["epoch"] = torch.tensor(epochs)
        out["skipped"] = torch.tensor(self.skips.take())
        return out

    def __iter__(self):
        roles = [self._role(r) for r in range(self.roles)]
        for b in itertools.count(self.start_batch):  # batch b comes from role b % roles, as from workers
            yield self._make(*next(roles[b % self.roles]))
