"""Workers and data.cache hand over uint8 images; distgen.data.to_device (the loops' one place) makes them
float [-1, 1] at the recipe's size on the training device, bit-identical to the float batches the workers
used to make (PIL decode -> crop -> N C H W float -> / 127.5 - 1 -> resize, recomputed here from the shards)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from distgen.config import DataConfig
from distgen.data import load_info, split_urls, to_device, train_loader
from test_readers import write_set


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    out = tmp_path_factory.mktemp("uint8") / "rgb"
    writer_rng = np.random.default_rng(1)
    from shards.writer import ShardSetWriter

    writer = ShardSetWriter(out, samples_per_shard=8, encoding="png")
    pixels = {}
    for i in range(24):
        pixels[i] = writer_rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
        writer.add("train", f"s{i:05d}", Image.fromarray(pixels[i]), cls=i)
    writer.finish(format="ids", image_size=10, channels=3, class_names=[str(i) for i in range(24)], attr_names=[])
    return out, pixels


def before(pixels: dict, labels, crop: int, size: int) -> torch.Tensor:
    """The float batch as the workers made it before they sent uint8 (samples.Transform.finish)."""
    top = (10 - crop) // 2
    batch = torch.stack([torch.from_numpy(pixels[int(i)][top:top + crop, top:top + crop]) for i in labels])
    batch = batch.permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(127.5).sub_(1.0)
    if batch.shape[-1] != size:
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return batch


@pytest.mark.parametrize("cache, workers, crop, size", [("none", 1, 6, 16), ("none", 0, 0, 0), ("ram", 0, 8, 5)])
def test_uint8_batches_become_todays_floats_bit_identical(rgb, cache, workers, crop, size):
    root, pixels = rgb
    cfg = DataConfig(root=str(root), shuffle_buffer=4, num_workers=workers, cache=cache, crop=crop, image_size=size)
    info = load_info(cfg)
    raw = list(itertools.islice(iter(train_loader(split_urls(info, "train", "t"), 5, info, cfg, 0, 0, 1)), 6))
    for batch in raw:
        assert batch["image"].dtype == torch.uint8  # through the worker queue and from the cache
        got = to_device(batch, "cpu")
        assert got["image"].dtype == torch.float32 and "resize" not in got
        assert torch.equal(got["image"], before(pixels, batch["label"], crop or 10, size or 10))
        assert torch.equal(got["label"], batch["label"])


def test_to_device_keeps_everything_on_the_target_device(rgb):
    """On the meta device (no data): every tensor moves, the image is scaled and resized there."""
    root, _ = rgb
    cfg = DataConfig(root=str(root), shuffle_buffer=4, image_size=7)
    info = load_info(cfg)
    batch = next(iter(train_loader(split_urls(info, "train", "t"), 5, info, cfg, 0, 0, 1)))
    assert int(batch["resize"]) == 7
    out = to_device(batch, "meta")
    assert {v.device.type for v in out.values()} == {"meta"}
    assert out["image"].dtype == torch.float32 and out["image"].shape == (5, 3, 7, 7)


def test_evaluation_batches_pass_through_unchanged(tmp_path):
    from distgen.data import eval_batches

    root = write_set(tmp_path / "ids")
    info = load_info(DataConfig(root=str(root)))
    batch = next(eval_batches(split_urls(info, "train", "t"), 4, info))
    assert batch["image"].dtype == torch.float32
    assert torch.equal(to_device(batch, "cpu")["image"], batch["image"])
