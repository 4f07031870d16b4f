"""Loader benchmark: samples/s of the shard stream against a folder of PNGs read by a torch Dataset.

    .venv/bin/python benchmarks/loader.py [--images 2500] [--workers 2] [--batch-size 64] [--rounds 3]

The same 64x64 RGB PNG bytes (crops of scikit-learn's sample photos) are written to a temporary
folder once as files and once as 500-sample tar shards, then read into batches of 64 with the same
DataLoader worker count and the same transforms (random horizontal flip, scale to [-1, 1]) by:

- stream: distgen.data.train_loader (split mode, one rank);
- folder: a map-style Dataset + DataLoader(shuffle=True) that reads each file by path and calls the
  stream's own decoder and transform code on it, one sample at a time (the strict comparison: only
  the way of loading differs);
- folder_tv: the usual torchvision-style folder Dataset: PIL open by path, convert("RGB"), then
  torchvision.transforms.v2 (ToImage, RandomHorizontalFlip, ToDtype scale, Normalize 0.5/0.5).

Each is timed warm (files in the page cache) and the stream and folder also cold (each file's cached
pages dropped with posix_fadvise before the pass, as for a data set larger than memory or on a
network file system). A pass times n // 64 - 1 batches after one warm-up batch (worker start not
counted); rounds run the loaders in alternating order so a busy machine slows all alike. Ratios of
samples/s are medians over rounds of the per-round ratio. On a shared machine those swing with the
other load, so each pass also counts the CPU seconds it used per sample (main process and workers,
from getrusage): `ratio_cpu` = folder CPU/sample over stream CPU/sample, which other load barely
moves. Ends with one JSON line:
{"benchmark": "loader", "ratio": stream/folder samples/s warm, "ratio_cold": ..., "ratio_cpu": ..., ...}
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from sklearn.datasets import load_sample_images
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from distgen.config import DataConfig
from distgen.data import load_info, split_urls, train_loader
from distgen.data.samples import Transform

SIZE, PER_SHARD = 64, 500


def make_images(n: int, seed: int = 0) -> list[bytes]:
    """n PNG-encoded 64x64 crops of real photos, at random places and scales."""
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    out = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(SIZE, 4 * SIZE))
        top, left = rng.integers(photo.shape[0] - side), rng.integers(photo.shape[1] - side)
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((SIZE, SIZE), Image.BILINEAR)
        buf = io.BytesIO()
        crop.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def write_both(images: list[bytes], root: Path) -> tuple[Path, Path]:
    folder, shards = root / "folder", root / "shards"
    folder.mkdir()
    shards.mkdir()
    names = []
    for i, data in enumerate(images):
        (folder / f"{i:06d}_{i % 10}.png").write_bytes(data)  # label in the name, as folder datasets do
        if i % PER_SHARD == 0:
            names.append(f"train-{len(names):06d}.tar")
            sink = wds.TarWriter(str(shards / names[-1]))
        sink.write({"__key__": f"{i:06d}", "png": data, "cls": str(i % 10)})
        if i % PER_SHARD == PER_SHARD - 1 or i == len(images) - 1:
            sink.close()
    (shards / "index.json").write_text(json.dumps({
        "image_size": SIZE, "channels": 3, "class_names": [str(d) for d in range(10)], "attr_names": [],
        "splits": {"train": {"shards": names, "count": len(images)}}}))
    os.sync()  # written back, so dropping the cached pages works
    return folder, shards


def drop_cache(*folders: Path) -> None:
    """Forget these files' pages in the page cache (only these files; no privileges needed)."""
    for folder in folders:
        for path in folder.iterdir():
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


class PngFolder(Dataset):
    """Strict baseline: one PNG file per sample, read by path, decoded and transformed per sample
    with the stream's own Transform, then default-collated."""

    def __init__(self, folder: Path, transform: Transform):
        self.files, self.transform, self.rng = sorted(folder.glob("*.png")), transform, random.Random(0)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        path = self.files[i]
        image, fields = self.transform.decode({"png": path.read_bytes(), "cls": path.stem.split("_")[1]})
        image, flip = self.transform.place(image, self.rng)
        one = self.transform.batch([image], [flip], [fields])
        return {k: v[0] for k, v in one.items()}


class TorchvisionFolder(Dataset):
    """The usual folder Dataset: PIL opens the file, torchvision transforms each sample."""

    def __init__(self, folder: Path):
        self.files = sorted(folder.glob("*.png"))
        self.transform = v2.Compose([v2.ToImage(), v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                                     v2.Normalize([0.5] * 3, [0.5] * 3)])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        with open(self.files[i], "rb") as f:
            image = Image.open(f).convert("RGB")
        return {"image": self.transform(image), "label": int(self.files[i].stem.split("_")[1])}


def cpu_seconds() -> float:
    """CPU time of this process and of its finished (joined) children: the DataLoader workers."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(make, n: int, batch_size: int) -> tuple[float, float]:
    """(samples/s over n // batch_size - 1 batches after one warm-up batch, CPU seconds per sample
    of the whole pass with worker start and shutdown). The second does not depend on what else the
    machine is running; the first does."""
    cpu = cpu_seconds()
    loader = make()
    it = iter(loader)
    next(it)
    steps = n // batch_size - 1
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    wall = time.perf_counter() - start
    del it, loader  # shuts the workers down and joins them, so their CPU time is counted
    gc.collect()
    return steps * batch_size / wall, (cpu_seconds() - cpu) / ((steps + 1) * batch_size)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    bs, n = args.batch_size, args.images
    with tempfile.TemporaryDirectory() as tmp:
        folder, shards = write_both(make_images(n), Path(tmp))
        cfg = DataConfig(root=str(shards), num_workers=args.workers, hflip=True)
        info = load_info(cfg)
        transform = Transform(info.channels, SIZE, hflip=True)

        def folder_loader(dataset, seed):
            return DataLoader(dataset, batch_size=bs, shuffle=True, num_workers=args.workers, drop_last=True,
                              persistent_workers=False, generator=torch.Generator().manual_seed(seed))

        loaders = {
            "stream": lambda r: train_loader(split_urls(info, "train", "train"), bs, info, cfg, r, 0, 1),
            "folder": lambda r: folder_loader(PngFolder(folder, transform), r),
            "folder_tv": lambda r: folder_loader(TorchvisionFolder(folder), r),
        }
        runs = [("stream", False), ("folder", False), ("folder_tv", False), ("stream", True), ("folder", True)]
        rates: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for name, cold in (runs if r % 2 == 0 else runs[::-1]):
                if cold:
                    drop_cache(folder, shards)
                key = name + ("_cold" if cold else "")
                sps, cps = measure(lambda: loaders[name](r), n, bs)
                rates.setdefault(key, []).append(sps)
                cpu.setdefault(key, []).append(cps)

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(rates[a], rates[b])), 3)

    result = {"benchmark": "loader", "ratio": ratio("stream", "folder"),
              "ratio_cold": ratio("stream_cold", "folder_cold"),
              "ratio_vs_torchvision": ratio("stream", "folder_tv"),
              "ratio_cpu": round(statistics.median(cpu["folder"]) / statistics.median(cpu["stream"]), 3),
              "ratio_cpu_vs_torchvision": round(statistics.median(cpu["folder_tv"]) / statistics.median(cpu["stream"]),
                                                3),
              **{f"{k}_samples_per_s": round(statistics.median(v), 1) for k, v in rates.items()},
              **{f"{k}_cpu_ms_per_sample": round(1000 * statistics.median(v), 3) for k, v in cpu.items()},
              "rounds_samples_per_s": {k: [round(x) for x in v] for k, v in rates.items()},
              "images": n, "image_size": SIZE, "workers": args.workers, "batch_size": bs,
              "transforms": "decode RGB, random hflip, [-1,1]",
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU used",
              "python": platform.python_version(), "torch": torch.__version__}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
