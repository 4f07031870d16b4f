"""One WebDataset sample -> tensors: decode, grey/RGB, crop, resize, flip, [-1, 1]; and the count of
what a worker had to skip.

Used by distgen.data's streams (`python -m pytest tests/test_stream.py` exercises it).

We decode with PIL ourselves rather than with `wds.decode`: a corrupt image must become a counted,
warned skip that the stream can replace (see stream.py), the image stays uint8 until after the
crop, and the grey/RGB conversion is the recipe's, not the shard's. (torchvision's decoder is about
1.3x faster on 64x64 PNGs but deprecated since torchvision 0.29.)
"""
from __future__ import annotations

import io
import json
import logging
import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from distgen.errors import DataError

log = logging.getLogger("distgen.data")
IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
MIN_WINDOW = 1000  # the skip fraction is measured over at least this many samples
WARN_FIRST = 100  # skips warned one by one, per worker


class Transform:
    """Raw samples -> a batch {"image": float [-1, 1] NCHW, "label": long, "attrs": float} at the recipe's size.

    Per sample (`decode`, `place`): decode to `channels`, crop a `crop`-px square (random or centre),
    choose a left-right flip with probability 1/2 if `hflip`. Per batch (`batch`): flip, scale to
    [-1, 1] and resize to `size` in one tensor operation each, instead of once per image. Random
    choices come from the `rng` the stream passes, so they repeat exactly on a rerun or resume."""

    def __init__(self, channels: int, size: int, attrs: tuple[str, ...] = (), crop: int = 0,
                 random_crop: bool = False, hflip: bool = False):
        self.mode = {1: "L", 3: "RGB"}.get(channels)
        if self.mode is None:
            raise DataError(f"channels={channels}; supported: 1 (grey) or 3 (RGB)")
        self.size, self.attrs, self.crop = size, attrs, crop
        self.random_crop, self.hflip = random_crop, hflip

    @property
    def random(self) -> bool:
        return self.hflip or (self.random_crop and self.crop > 0)

    def decode(self, sample: dict) -> tuple[torch.Tensor, dict]:
        """uint8 HWC image (as decoded; one copy to CHW happens per batch) and conditioning fields;
        raises on anything unreadable."""
        key = next((k for k in IMAGE_KEYS if k in sample), None)
        if key is None:
            raise ValueError(f"no image ({'/'.join(IMAGE_KEYS)}) among {sorted(k for k in sample if k[0] != '_')}")
        with Image.open(io.BytesIO(sample[key])) as img:
            array = np.array(img if img.mode == self.mode else img.convert(self.mode))  # decodes every byte,
        image = torch.from_numpy(array)  # so a truncated image raises above
        fields = {}
        if "cls" in sample:
            fields["label"] = int(sample["cls"])
        attrs = json.loads(sample["json"]).get("attrs") if "json" in sample else None
        if attrs:
            fields["attrs"] = [float(attrs[a]) for a in self.attrs or attrs]
        return (image[..., None] if image.ndim == 2 else image), fields

    def place(self, image: torch.Tensor, rng: random.Random | None = None) -> tuple[torch.Tensor, bool]:
        """The crop (a view) and whether to flip."""
        if self.crop:
            h, w = image.shape[:2]
            c = min(self.crop, h, w)
            top, left = (rng.randint(0, h - c), rng.randint(0, w - c)) if self.random_crop and rng else \
                ((h - c) // 2, (w - c) // 2)
            image = image[top:top + c, left:left + c]
        return image, bool(self.hflip and rng and rng.random() < 0.5)

    def batch(self, images: list[torch.Tensor], flips: list[bool], fields: list[dict]) -> dict:
        size = (self.size, self.size)
        if len({im.shape for im in images}) > 1:  # mixed sizes (not from `python -m shards`): resize each first
            images = [F.interpolate(im.permute(2, 0, 1)[None].float(), size=size, mode="bilinear", antialias=True)
                      [0].round().byte().permute(1, 2, 0) for im in images]
        batch = torch.stack(images)  # N H W C: a plain copy of each image
        flipped = [i for i, f in enumerate(flips) if f]
        if flipped:
            batch[flipped] = batch[flipped].flip(2)
        batch = batch.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        batch = batch.div_(127.5).sub_(1.0)
        if batch.shape[-2:] != size:
            batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True, align_corners=False)
        out = {"image": batch}
        for key, dtype in (("label", torch.long), ("attrs", torch.float32)):
            if key in fields[0]:
                out[key] = torch.tensor([f[key] for f in fields], dtype=dtype)
        return out


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
