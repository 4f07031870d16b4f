"""Loader benchmark: per-core images/s of the PNG stream, the decode-free stream, data.cache=ram (and
=device with CUDA), a torchvision-style folder loader, beside the harness's DCGAN-64 training images/s.

    .venv/bin/python benchmarks/loader.py [--images 2500] [--rounds 3] [--train-steps 6]

The same 64x64 RGB images (crops of scikit-learn's sample photos) are written to a temporary folder as
PNG files, as 500-sample tar shards of PNGs, and as shards of decode-free `.npy` pixels (what
`python -m shards FORMAT --encoding raw` writes), each shard set with its index.json. Batches of 64
with the same transforms (random horizontal flip, scale to [-1, 1]) are read by:

- png: distgen.data.train_loader over the PNG shards (the stream as it was);
- raw: the same stream over the decode-free shards;
- ram: data.cache=ram over the decode-free shards (the one-time load is not timed);
- device: data.cache=device on the GPU, when there is one (the batch ends on the GPU, gathered, flipped
  and scaled there);
- folder_tv: the usual torchvision-style folder Dataset (PIL open by path, convert RGB,
  torchvision.transforms.v2 ToImage, RandomHorizontalFlip, ToDtype scale, Normalize 0.5/0.5) in a
  DataLoader(shuffle=True).

The stream and the cache hand over uint8 batches; each is scaled to [-1, 1] by distgen.data.to_device,
as the training loops do, on this core (on the GPU for `device`), so every loader's figure includes it.

Per core: every loader runs in this one process (num_workers=0, one torch thread), and a pass counts
the CPU seconds the process used (getrusage) over n // 64 - 1 batches after a warm-up batch;
per-core images/s = images / CPU seconds. That is what one DataLoader worker (one core) delivers, and
other load on a shared machine barely moves it, unlike wall time (also printed). Rounds alternate the
order; figures are medians over rounds. `ratio_raw` = raw / png and `ratio_ram` = ram / png, per-core,
from the same run.

Beside them, `train_images_per_s`: the harness's own adversarial loop training dcgan_celeba's nets
(width 64, 64x64 RGB, batch 64) from one batch held in memory (benchmarks/gpu.py's run_loop), on the
GPU if there is one, else on all CPU threads: how many images/s the loader has to feed.
Ends with one JSON line.
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import os
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import finish  # noqa: E402
from distgen.config import DataConfig  # noqa: E402
from distgen.data import load_info, split_urls, to_device, train_loader  # noqa: E402

SIZE, PER_SHARD, BATCH = 64, 500, 64


def make_images(n: int, seed: int = 0) -> list[np.ndarray]:
    """n 64x64 RGB crops of real photos, at random places and scales."""
    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    out = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(SIZE, 4 * SIZE))
        top, left = rng.integers(photo.shape[0] - side), rng.integers(photo.shape[1] - side)
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((SIZE, SIZE), Image.BILINEAR)
        out.append(np.asarray(crop))
    return out


def png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, pixels, allow_pickle=False)
    return buf.getvalue()


def write_shards(images: list[np.ndarray], out: Path, ext: str, encode) -> Path:
    out.mkdir()
    names, counts = [], []
    for start in range(0, len(images), PER_SHARD):
        names.append(f"train-{len(names):06d}.tar")
        with wds.TarWriter(str(out / names[-1])) as sink:
            for i in range(start, min(start + PER_SHARD, len(images))):
                sink.write({"__key__": f"{i:06d}", ext: encode(images[i]), "cls": str(i % 10)})
        counts.append(min(PER_SHARD, len(images) - start))
    (out / "index.json").write_text(json.dumps({
        "image_size": SIZE, "channels": 3, "class_names": [str(d) for d in range(10)], "attr_names": [],
        "splits": {"train": {"shards": names, "count": len(images), "counts": counts}}}))
    return out


def write_folder(images: list[np.ndarray], out: Path) -> Path:
    out.mkdir()
    for i, pixels in enumerate(images):
        (out / f"{i:06d}_{i % 10}.png").write_bytes(png_bytes(pixels))  # label in the name, as folder sets do
    return out


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
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def measure(make, n: int, sync) -> tuple[float, float]:
    """(images per CPU second, images per wall second) over n // BATCH - 1 batches after a warm-up batch."""
    it = iter(make())
    next(it)
    steps = n // BATCH - 1
    cpu, wall = cpu_seconds(), time.perf_counter()
    for _ in range(steps):
        batch = next(it)
    sync(batch)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
    del it
    gc.collect()
    return steps * BATCH / cpu, steps * BATCH / wall


def training_images_per_s(steps: int) -> tuple[float, str]:
    """The harness's adversarial loop on dcgan_celeba's nets from one in-memory batch (benchmarks/gpu.py)."""
    from benchmarks.gpu import config_for, run_loop

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        cfg = config_for("dcgan", BATCH, steps, device, 64, False, False)
        rows = [r for r in run_loop(cfg, device) if "img/s" in r]
    finally:
        torch.set_num_threads(threads)
    return rows[-1]["img/s"], device if device == "cuda" else f"cpu, {os.cpu_count()} threads"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=6, help="DCGAN-64 training steps (img/s of the second half); 0 skips it")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n = args.images
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(n)
        png = write_shards(images, Path(tmp) / "png", "png", png_bytes)
        raw = write_shards(images, Path(tmp) / "raw", "npy", npy_bytes)
        folder = write_folder(images, Path(tmp) / "folder")
        sizes = {"png_bytes_per_image": round(sum(p.stat().st_size for p in png.glob("*.tar")) / n),
                 "raw_bytes_per_image": round(sum(p.stat().st_size for p in raw.glob("*.tar")) / n)}

        def stream(root: Path, cache: str = "none"):
            def make(r):
                cfg = DataConfig(root=str(root), hflip=True, cache=cache)
                info = load_info(cfg)
                device = torch.device("cuda") if cache == "device" else None
                # uint8 batches made float [-1, 1] as the loops do (distgen/data/device.py): on the GPU for
                # `device`, on this core otherwise (as the workers did before they sent uint8)
                return (to_device(b, device or "cpu") for b in train_loader(
                    split_urls(info, "train", "t"), BATCH, info, cfg, r, 0, 1, device=device))
            return make

        loaders = {"png": stream(png), "raw": stream(raw), "ram": stream(raw, "ram"),
                   "folder_tv": lambda r: DataLoader(TorchvisionFolder(folder), batch_size=BATCH, shuffle=True,
                                                     drop_last=True, generator=torch.Generator().manual_seed(r))}
        if cuda:
            loaders["device"] = stream(raw, "device")
        sync = (lambda b: torch.cuda.synchronize()) if cuda else (lambda b: None)
        per_core: dict[str, list[float]] = {}
        wall: dict[str, list[float]] = {}
        for r in range(args.rounds):
            names = list(loaders) if r % 2 == 0 else list(loaders)[::-1]
            for name in names:
                random.seed(r)
                cps, wps = measure(lambda: loaders[name](r), n, sync)
                per_core.setdefault(name, []).append(cps)
                wall.setdefault(name, []).append(wps)
    train_ips, train_where = training_images_per_s(args.train_steps) if args.train_steps else (None, "not run")

    med = {k: statistics.median(v) for k, v in per_core.items()}
    result = {"ratio_raw": round(med["raw"] / med["png"], 2), "ratio_ram": round(med["ram"] / med["png"], 2),
              "ratio_png_vs_torchvision": round(med["png"] / med["folder_tv"], 2),
              **({"ratio_device": round(med["device"] / med["png"], 2)} if cuda else {}),
              **{f"{k}_images_per_core_s": round(v) for k, v in med.items()},
              **{f"{k}_images_per_wall_s": round(statistics.median(v)) for k, v in wall.items()},
              "rounds_images_per_core_s": {k: [round(x) for x in v] for k, v in per_core.items()},
              "train_dcgan64_images_per_s": train_ips and round(train_ips, 1), "train_on": train_where,
              "train_headroom_ram": train_ips and round(med["ram"] / train_ips, 1), **sizes,
              "images": n, "image_size": SIZE, "batch_size": BATCH, "rounds": args.rounds,
              "transforms": "RGB, random hflip, [-1,1]", "cpus": os.cpu_count()}
    finish("loader", result["ratio_raw"], **result)
    return result


if __name__ == "__main__":
    main()
