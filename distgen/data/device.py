"""Training batches onto the training device: the one place uint8 images become float [-1, 1].

The loops call it for every batch (distgen/loops/common.py to_device, which adversarial.Streams.next and
the single-objective loop use); `python -m pytest tests/test_uint8_batches.py` checks it.

DataLoader workers (stream.py) and data.cache (cache.py) hand over images as uint8 N C H W: a quarter
of float32's bytes through the workers' shared-memory queue, the pinned copy and the host-to-device
transfer. Scaling to [-1, 1] (and the resize, when data.image_size differs from the stored size,
marked by the batch's "resize", a host tensor) then runs here, on the device, with the arithmetic the workers used
to run (samples.to_float), so the batches are bit-identical on a CPU. Batches whose images are
already float (evaluation's) pass through unchanged.
"""
from __future__ import annotations

import torch

from distgen.data.decoding import to_float


def to_device(batch: dict, device) -> dict:
    """Every tensor of `batch` on `device` (non-blocking: from pinned memory the copy does not wait for
    the device), the image as float [-1, 1] at the recipe's size."""
    size = int(batch["resize"]) if "resize" in batch else None  # a host tensor (the workers' or the cache's): no sync
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "resize"}
    if "image" in out and out["image"].dtype == torch.uint8:
        out["image"] = to_float(out["image"], size)
    return out
