"""One WebDataset sample -> tensors: decode, grey/RGB, crop, resize, flip, [-1, 1]; and the count of
what a worker had to skip.

Used by distgen.data's streams (`python -m pytest tests/test_stream.py` exercises it).

We decode with PIL ourselves rather than with `wds.decode`: a corrupt image must become a counted,
warned skip that the stream can replace (see stream.py), the image stays uint8 until after the
crop, and the grey/RGB conversion is the recipe's, not the shard's. (torchvision's decoder is about
1.3x faster on 64x64 PNGs but deprecated since torchvision 0.29.)

Decode-free samples (`python -m shards FORMAT ... --encoding raw`) hold the pixels as a `.npy` member:
an H x W x C (or H x W) uint8 array in NumPy's own file format, which `wds.WebDataset(...).decode()`
also reads (to an ndarray). We read its header once per distinct header (every sample of a shard set
shares one) and view the bytes after it, about a microsecond instead of PNG's ~0.4 ms.

A shard set whose index lists classes must give every sample a `.cls`, and one that lists attributes
must give every sample a `.json` with `attrs`; a sample without is a DataError naming the shard and
key (a label missing or stored away from its image), never a skip.
"""
from __future__ import annotations

import ast
import functools
import io
import json
import logging
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from distgen.errors import DataError

log = logging.getLogger("distgen.data")
IMAGE_KEYS = ("npy", "png", "jpg", "jpeg", "webp")
NPY_MAGIC = b"\x93NUMPY"


@functools.lru_cache(maxsize=64)
def _npy_header(prefix: bytes) -> tuple[tuple[int, ...], int]:
    """(shape, offset of the data) of a .npy file starting with `prefix` (magic, version, header)."""
    if prefix[:6] != NPY_MAGIC:
        raise ValueError("not a .npy array (no NumPy magic bytes)")
    size_bytes = 2 if prefix[6] == 1 else 4
    length = int.from_bytes(prefix[8:8 + size_bytes], "little")
    start = 8 + size_bytes
    header = ast.literal_eval(prefix[start:start + length].decode("latin1"))
    if header["descr"] not in ("|u1", "<u1", ">u1") or header["fortran_order"]:
        raise ValueError(f"a .npy image must be C-ordered uint8, not {header['descr']!r}")
    shape = tuple(header["shape"])
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
        raise ValueError(f"a .npy image must be H x W or H x W x C (C = 1, 3 or 4), not {shape}")
    return shape, start + length


def npy_image(data: bytes) -> np.ndarray:
    """H x W x C uint8 view of a decode-free sample (checks the size, so a cut-off one raises)."""
    size_bytes = 2 if data[6:7] == b"\x01" else 4
    shape, offset = _npy_header(bytes(data[:8 + size_bytes + int.from_bytes(data[8:8 + size_bytes], "little")]))
    pixels = np.frombuffer(bytearray(data), np.uint8, offset=offset)  # a writable copy, as a decoded PNG is
    if pixels.size != math.prod(shape):
        raise ValueError(f".npy image holds {pixels.size} bytes for shape {shape}: cut short")
    pixels = pixels.reshape(shape)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def to_mode(array: np.ndarray, channels: int) -> np.ndarray:
    """H x W x C uint8 -> `channels` (1 grey, 3 RGB) as PIL converts: L = (299 R + 587 G + 114 B) / 1000."""
    have = array.shape[2]
    if have == 4:
        array, have = array[..., :3], 3
    if have == channels:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=2)
    return np.asarray(Image.fromarray(np.ascontiguousarray(array)).convert("L"))[..., None]
MIN_WINDOW = 1000  # the skip fraction is measured over at least this many samples
WARN_FIRST = 100  # skips warned one by one, per worker


class Transform:
    """Raw samples -> a batch {"image": float [-1, 1] NCHW (training: uint8), "label": long, "attrs": float}.

    Per sample (`decode`, `place`): decode to `channels`, crop a `crop`-px square (random or centre),
    choose a left-right flip with probability 1/2 if `hflip`. Per batch (`batch`): flip, then (to_float,
    on the training device for training batches) scale to [-1, 1] and resize to `size`, in one tensor
    operation each instead of once per image. Random
    choices come from the `rng` the stream passes, so they repeat exactly on a rerun or resume."""

    def __init__(self, channels: int, size: int, attrs: tuple[str, ...] = (), crop: int = 0,
                 random_crop: bool = False, hflip: bool = False, labels: bool = False, has_attrs: bool = False):
        self.mode = {1: "L", 3: "RGB"}.get(channels)
        if self.mode is None:
            raise DataError(f"channels={channels}; supported: 1 (grey) or 3 (RGB)")
        self.channels, self.size, self.attrs, self.crop = channels, size, attrs, crop
        self.random_crop, self.hflip = random_crop, hflip
        self.labels, self.has_attrs = labels, has_attrs  # what the index promises every sample holds

    @property
    def random(self) -> bool:
        return self.hflip or (self.random_crop and self.crop > 0)

    def decode(self, sample: dict) -> tuple[torch.Tensor, dict]:
        """uint8 HWC image (as decoded; one copy to CHW happens per batch) and conditioning fields;
        raises on anything unreadable."""
        key = next((k for k in IMAGE_KEYS if k in sample), None)
        if key is None:
            members = sorted(k for k in sample if k[0] != '_')
            if self.labels and "cls" in sample:  # a label with no image: the image is elsewhere in the shard
                raise DataError(f"shard '{sample.get('__url__')}': sample '{sample.get('__key__')}' has a label "
                                f"but no image ({'/'.join(IMAGE_KEYS)}) next to it (members: {', '.join(members)}); "
                                f"write its members next to each other (`tar --sort=name`)")
            raise ValueError(f"no image ({'/'.join(IMAGE_KEYS)}) among {members}")
        if key == "npy":
            image = torch.from_numpy(to_mode(npy_image(sample[key]), self.channels))
        else:
            with Image.open(io.BytesIO(sample[key])) as img:
                array = np.array(img if img.mode == self.mode else img.convert(self.mode))  # decodes every byte,
            image = torch.from_numpy(array)  # so a truncated image raises above
        fields = {}
        if "cls" in sample:
            fields["label"] = int(sample["cls"])
        elif self.labels:
            raise self.missing(sample, "no label (.cls)", "classes")
        attrs = json.loads(sample["json"]).get("attrs") if "json" in sample else None
        if attrs:
            fields["attrs"] = [float(attrs[a]) for a in self.attrs or attrs]
        elif self.has_attrs:
            raise self.missing(sample, "no attributes (.json with attrs)", "attribute names")
        return (image[..., None] if image.ndim == 2 else image), fields

    @staticmethod
    def missing(sample: dict, what: str, listed: str) -> DataError:
        members = ", ".join(sorted(k for k in sample if k[0] != "_"))
        return DataError(f"shard '{sample.get('__url__')}': sample '{sample.get('__key__')}' has {what} next to "
                         f"its image (members: {members}), but the index lists {listed}; a label stored away "
                         f"from its image or left out. Rewrite the shard with each sample's files together "
                         f"(`tar --sort=name`), or rebuild the index with `python -m shards index`")

    def choose(self, h: int, w: int, rng: random.Random | None = None) -> tuple[int, int, int, bool]:
        """(top, left, side) of the crop of an h x w image and whether to flip: the random draws of one
        sample, in one fixed order, so the stream and data.cache make the same choices."""
        c = min(self.crop, h, w) if self.crop else 0
        top, left = 0, 0
        if c:
            top, left = (rng.randint(0, h - c), rng.randint(0, w - c)) if self.random_crop and rng else \
                ((h - c) // 2, (w - c) // 2)
        return top, left, c, bool(self.hflip and rng and rng.random() < 0.5)

    def place(self, image: torch.Tensor, rng: random.Random | None = None) -> tuple[torch.Tensor, bool]:
        """The crop (a view) and whether to flip."""
        top, left, c, flip = self.choose(image.shape[0], image.shape[1], rng)
        if c:
            image = image[top:top + c, left:left + c]
        return image, flip

    def batch(self, images: list[torch.Tensor], flips: list[bool], fields: list[dict], normalize: bool = True) -> dict:
        """One batch. normalize=False (training): "image" stays uint8 N C H W, a quarter of float's bytes
        through the DataLoader's queue and to the device, and, when it must be resized, "resize" gives the
        side; distgen.data.device.to_device makes it the float [-1, 1] batch on the training device."""
        size = (self.size, self.size)
        if len({im.shape for im in images}) > 1:  # mixed sizes (not from `python -m shards`): resize each first
            images = [F.interpolate(im.permute(2, 0, 1)[None].float(), size=size, mode="bilinear", antialias=True)
                      [0].round().byte().permute(1, 2, 0) for im in images]
        batch = torch.stack(images)  # N H W C: a plain copy of each image
        image = self.flip_to_nchw(batch, [i for i, f in enumerate(flips) if f])
        out = {"image": to_float(image, self.size) if normalize else image}
        if not normalize and tuple(image.shape[-2:]) != size:
            out["resize"] = torch.tensor(self.size)  # a tensor, as every value of a batch is
        for key, dtype in (("label", torch.long), ("attrs", torch.float32)):
            if key in fields[0]:
                out[key] = torch.tensor([f[key] for f in fields], dtype=dtype)
        return out

    @staticmethod
    def flip_to_nchw(batch: torch.Tensor, flipped) -> torch.Tensor:
        """uint8 N H W C (a copy) -> uint8 N C H W, the `flipped` rows mirrored."""
        for i in flipped:  # row by row: on a CPU cheaper than indexing the flipped rows at once
            batch[i] = batch[i].flip(1)
        return batch.permute(0, 3, 1, 2).contiguous()


def to_float(image: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 N C H W (on any device) -> float N C H W in [-1, 1], resized to `size` if given and different:
    one tensor operation each, where the batch lives. Every training and evaluation image goes through here."""
    image = image.to(torch.float32).div_(127.5).sub_(1.0)
    if size and tuple(image.shape[-2:]) != (size, size):
        image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return image


class Skips:
    """What one worker read and skipped. Each corrupt image and each truncated or unreadable shard
    is one skip, warned (the first WARN_FIRST of them); more than `max_fraction` of the samples read
    (measured over at least MIN_WINDOW) stops the run with a DataError."""

    def __init__(self, max_fraction: float, where: str):
        self.max_fraction, self.where = max_fraction, where
        self.seen = self.skipped = self.reported = 0

    def skip(self, what: str, exc: BaseException) -> None:
        self.skipped += 1
        first = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)  # some errors carry
        reason = f"{type(exc).__name__}: {first[:200]}"  # the stream and URL as further args; `what` names them
        if self.skipped <= WARN_FIRST:
            more = "; further skips are counted, not warned one by one" if self.skipped == WARN_FIRST else ""
            log.warning(f"warning: data ({self.where}): skipped {what} ({reason}); {self.skipped} skipped so far{more}")
        if self.skipped > self.max_fraction * max(self.seen, MIN_WINDOW):
            raise DataError(f"data ({self.where}): {self.skipped} skips in {self.seen} samples read is more than "
                            f"data.max_skip_fraction={self.max_fraction}; last: {what} ({reason}). Check or "
                            f"rebuild the shards (`python -m shards ...`), or raise data.max_skip_fraction")

    def take(self) -> int:
        """Skips not yet handed on in a batch."""
        new, self.reported = self.skipped - self.reported, self.skipped
        return new
