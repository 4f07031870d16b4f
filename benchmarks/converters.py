"""Converter benchmark: images/s of `python -m shards celeba` with 1 and 2 workers on a synthetic CelebA.

    .venv/bin/python benchmarks/converters.py [--images 202599] [--workers 1 2] [--keep DIR]

Writes a CelebA-sized set in the official layout to a temporary folder (never to the repository):
`img_align_celeba/000001.jpg ...` (178x218 JPEG, quality 90, smooth random colour fields with a
little noise, 7-10 kB each like the real photos), `list_attr_celeba.txt` (40 attributes) and
`list_eval_partition.txt` (the real split sizes, scaled to --images). Then runs the real command
line, `python -m shards celeba --src ... --out ... --workers N`, once per N, and times it whole
(start-up, reading the lists, decode, crop, resize, encode, writing shards and index.json).
Ends with one JSON line: images/s (wall) and images per CPU second (the command and its workers,
which other load on a shared machine barely moves) per worker count, and `ratio` = wall images/s
with the most workers over images/s with 1.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.common import ROOT, finish  # noqa: E402

CELEBA = 202_599
SPLITS = (162_770, 19_867, 19_962)  # the official train / val / test sizes
ATTRS = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
         "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair "
         "Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face "
         "Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair "
         "Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()


def write_image(job: tuple[Path, int]) -> None:
    folder, i = job
    rng = np.random.default_rng(i)
    field = Image.fromarray(rng.integers(0, 256, (7, 6, 3), dtype=np.uint8)).resize((178, 218), Image.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.integers(-6, 7, (218, 178, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)


def make_celeba(src: Path, n: int) -> None:
    folder = src / "img_align_celeba"
    folder.mkdir(parents=True)
    with Pool(os.cpu_count()) as pool:
        pool.map(write_image, ((folder, i) for i in range(1, n + 1)), chunksize=256)
    rng = np.random.default_rng(0)
    rows = [f"{i:06d}.jpg " + " ".join(rng.choice(["-1", " 1"], len(ATTRS))) for i in range(1, n + 1)]
    (src / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(ATTRS)}\n" + "\n".join(rows) + "\n")
    bounds = np.cumsum([round(n * s / CELEBA) for s in SPLITS[:2]])
    (src / "list_eval_partition.txt").write_text(
        "".join(f"{i:06d}.jpg {int(np.searchsorted(bounds, i - 1, side='right'))}\n" for i in range(1, n + 1)))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=CELEBA)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    rates, per_cpu = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "celeba"
        start = time.perf_counter()
        make_celeba(src, args.images)
        made = time.perf_counter() - start
        jpeg_bytes = sum(p.stat().st_size for p in (src / "img_align_celeba").iterdir()) / args.images
        for workers in args.workers:
            out = Path(tmp) / f"out{workers}"
            child = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = child.ru_utime + child.ru_stime  # the command and its worker processes, once they end
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "shards", "celeba", "--src", str(src), "--out", str(out),
                                     "--workers", str(workers)], cwd=ROOT, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if result.returncode:
                sys.exit(f"shards celeba failed:\n{result.stderr[-2000:]}")
            child = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = child.ru_utime + child.ru_stime - cpu
            rates[workers], per_cpu[workers] = args.images / seconds, args.images / cpu
            print(f"--workers {workers}: {args.images} images in {seconds:.1f} s = {rates[workers]:.0f} images/s "
                  f"({per_cpu[workers]:.0f} per CPU second); {result.stdout.strip()}", flush=True)
    most = max(args.workers)
    fields = {**{f"workers_{w}_images_per_s": round(r, 1) for w, r in rates.items()},
              **{f"workers_{w}_images_per_cpu_s": round(r, 1) for w, r in per_cpu.items()}}
    finish("converters", rates[most] / rates[min(args.workers)], **fields, images=args.images,
           jpeg_bytes_per_image=round(jpeg_bytes), generate_seconds=round(made, 1), cpus=os.cpu_count())
    return rates


if __name__ == "__main__":
    main()
