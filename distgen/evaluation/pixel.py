"""Photo -> map pixel metrics of a CycleGAN run on the paired maps test split: RMSE and pixel accuracy.

    python launch/evaluate.py RUN_DIR --metrics pixel [--pixel-threshold 5] [--num-samples N]

The maps dataset is paired: `python -m shards maps` cuts each pix2pix image (aerial photo | map side
by side) into DIR/A and DIR/B under the same sample key (and the same `file` in each sample's .json),
so every test photo has its ground-truth map. The measures are those later unpaired-translation work
reports on maps (aerial photo -> map): each test photo of data.domain_a (data.eval_split) is
translated by G_AB at the run's image size (256 px for recipes/cyclegan_maps*.yaml), rounded to
0..255 as a saved PNG would be (inception.to_uint8), and compared with its map from data.domain_b:
  rmse_AB       root mean squared difference of the pixel values (0..255, every channel) of one
                image, averaged over the images
  pixel_acc_AB  fraction of the pixels whose channel values are all within the threshold of the ground
                truth: max over R, G, B of |fake - real| < delta (strict), delta = --pixel-threshold,
                5 by default (the usual choice), over all pixels of all images
Also num_pairs, pixel_threshold and pixel_size. Every pair of the split is measured (--num-samples
N: the first N). The ground truth is what the shards hold: at 256 px the converter stores JPEG
(quality 95), which moves some map pixels by a few levels; `python -m shards maps ... --encoding raw`
stores them exactly. Unpaired data (the CycleGAN layout, trainA/ testA/ ...) is refused with how to
convert the paired one.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from distgen.data import DataInfo, load_info
from distgen.data.decoding import Skips
from distgen.data.stream import make_transform
from distgen.data.tar import read_shard
from distgen.errors import ConfigError, DataError
from distgen.evaluation.inception import to_uint8

PIXEL_METRICS = ("pixel",)
DEFAULT_THRESHOLD = 5.0


def pixel_scores(fake: torch.Tensor, real: torch.Tensor, threshold: float = DEFAULT_THRESHOLD
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (RMSE, pixel accuracy) of N x C x H x W images on 0..255 (uint8 or float) against their
    ground truth: RMSE over all C*H*W values; accuracy = share of the H*W pixels whose largest
    channel difference is below `threshold`."""
    if fake.shape != real.shape:
        raise ValueError(f"translated images {tuple(fake.shape)} and ground truth {tuple(real.shape)} differ in shape")
    diff = fake.double() - real.double()
    rmse = diff.pow(2).flatten(1).mean(1).sqrt()
    acc = (diff.abs().amax(1) < threshold).double().flatten(1).mean(1)
    return rmse, acc


def _samples(data_cfg, root: str, split: str) -> tuple[DataInfo, list[dict]]:
    """(DataInfo, raw samples of the split in shard order) of one shard folder."""
    info = load_info(dataclasses.replace(data_cfg, root=root))
    if not info.splits.get(split):
        raise DataError(f"'{root}' has no split '{split}' (it has: {', '.join(info.splits) or 'none'}); the pixel "
                        f"metrics read the paired test split (data.eval_split)")
    skips = Skips(data_cfg.max_skip_fraction, f"pixel metrics, {root}")
    return info, [s for url in info.splits[split] for s in read_shard(url, skips, info.shard_counts.get(url))]


def _meta(sample: dict) -> dict:
    try:
        return json.loads(sample["json"]) if "json" in sample else {}
    except ValueError:
        return {}


def _layout(root: str) -> str:
    """The raw layout a `python -m shards maps` folder was converted from ("" when not recorded)."""
    try:
        return str(json.loads((Path(root) / "index.json").read_text()).get("layout", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def paired_batches(data_cfg, split: str, image_size: int, batch_size: int, limit: int = 0):
    """Batches (A images, B images), [-1, 1] N C H W at `image_size`, of the pairs of `split`: each sample
    of data.domain_a with the sample of data.domain_b under the same key, in A's shard order (the first
    `limit` pairs; 0 = all). A split that is not paired throughout is a ConfigError naming it and the fix."""
    roots = {"A": data_cfg.domain_a, "B": data_cfg.domain_b}
    if not all(roots.values()):
        raise ConfigError("the pixel metrics need data.domain_a (photos) and data.domain_b (maps)")
    (info_a, samples_a), (info_b, samples_b) = (_samples(data_cfg, roots[k], split) for k in ("A", "B"))
    by_key = {s["__key__"]: s for s in samples_b}
    partners = [by_key.get(s["__key__"]) for s in samples_a]
    fix = ("convert the paired pix2pix layout (train/ and val/, each image a photo and its map side by side) "
           "with `python -m shards maps --src RAW --out DIR`, which writes each pair under one key to DIR/A and "
           "DIR/B, and point data.domain_a/domain_b there")
    where = f"split '{split}' of data.domain_a '{roots['A']}' and data.domain_b '{roots['B']}'"
    if not any(partners):
        layout = _layout(roots["A"])
        made = f"; they were converted from the {layout}, which is unpaired" if "CycleGAN" in layout else ""
        raise ConfigError(f"the pixel metrics compare each photo's translation with its own map, but {where} "
                          f"share no sample key{made}: {fix}")
    lone = [a["__key__"] for a, b in zip(samples_a, partners) if b is None]
    if lone:
        raise ConfigError(f"{where}: {len(lone)} of {len(samples_a)} photos have no map under their key "
                          f"(first: '{lone[0]}'); the split is not paired throughout: {fix}")
    for a, b in zip(samples_a, partners):
        fa, fb = _meta(a).get("file"), _meta(b).get("file")
        if fa and fb and fa != fb:
            raise ConfigError(f"{where}: sample '{a['__key__']}' comes from '{fa}' in A but from '{fb}' in B, "
                              f"so the two folders are not halves of the same pairs: {fix}")
    pairs = list(zip(samples_a, partners))[:limit or None]
    transforms = [make_transform(info, image_size=image_size, crop=data_cfg.crop) for info in (info_a, info_b)]
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        out = []
        for side, transform in enumerate(transforms):
            images = []
            for pair in chunk:
                try:
                    images.append(transform.place(transform.decode(pair[side])[0])[0])
                except DataError:
                    raise
                except Exception as exc:  # a pair cannot be left out of one side only: stop
                    raise DataError(f"{where}: sample '{pair[side]['__key__']}' of {'AB'[side]} cannot be "
                                    f"read ({exc}); rebuild the shards with `python -m shards maps`") from None
            out.append(transform.batch(images, [False] * len(images), [{}] * len(images))["image"])
        yield out[0], out[1]


@torch.no_grad()
def translation_pixels(family, threshold: float = DEFAULT_THRESHOLD, num_samples: int = 0,
                       batch_size: int = 16) -> dict:
    """rmse_AB, pixel_acc_AB (see the module docstring), num_pairs, pixel_threshold, pixel_size of a
    `cyclegan` family's G_AB on the pairs of data.eval_split."""
    if family.cfg.family != "cyclegan":
        raise ConfigError(f"metric 'pixel' measures a cyclegan run's photo -> map translation on paired data "
                          f"(maps); this is a '{family.cfg.family}' run")
    G = family.nets["G"].eval()
    rmse, acc = [], []
    for photos, maps in paired_batches(family.cfg.data, family.cfg.data.eval_split, family.image_size,
                                       batch_size, num_samples):
        fake = to_uint8(G(photos.to(family.device), "AB"))
        r, a = pixel_scores(fake, to_uint8(maps), threshold)
        rmse.append(r)
        acc.append(a)
    rmse, acc = torch.cat(rmse), torch.cat(acc)
    return {"rmse_AB": round(rmse.mean().item(), 6), "pixel_acc_AB": round(acc.mean().item(), 6),
            "num_pairs": len(rmse), "pixel_threshold": threshold, "pixel_size": family.image_size}
