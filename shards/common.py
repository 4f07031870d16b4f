"""Helpers shared by the format modules: accepted layouts, the common options, reading and fitting images.

Not a format itself; every `python -m shards FORMAT --src RAW_DIR --out OUT_DIR` goes through it:
the format module names its accepted `Layout`s, `pick_layout` finds one in --src (or raises a
DataError naming what is missing, before anything is written), the module lists its samples as
`Item`s, and `write_items` reads, crops, resizes and encodes them in `--workers` processes (in order,
so the shards are the same whatever the count) and writes them, skipping unreadable images by name.
"""
from __future__ import annotations

import csv
import multiprocessing
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from distgen.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
DIGIT_NAMES = [str(d) for d in range(10)]
UNREADABLE = np.empty(0, np.uint8)  # `Item.pixels` of a record that could not be parsed: skipped by name


@dataclass(frozen=True)
class Layout:
    """One accepted on-disk layout: for each split, the files and folders (ending in '/') it needs."""
    name: str
    splits: dict = field(hash=False)
    optional: tuple = ()  # splits converted by default only when their files are there (SVHN extra)

    def paths(self) -> list[str]:
        return list(dict.fromkeys(p for paths in self.splits.values() for p in paths))

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.paths())})"


def _exists(src: Path, rel: str) -> bool:
    return (src / rel).is_dir() if rel.endswith("/") else (src / rel).is_file()


def pick_layout(fmt: str, src: Path, layouts: list[Layout], wanted: list[str] | None) -> tuple[Layout, list[str]]:
    """The layout found in `src` (the one with most of its paths there) and the splits to convert."""
    accepted = "; ".join(layout.describe() for layout in layouts)
    if not src.is_dir():
        raise DataError(f"{fmt}: --src '{src}' is not a folder; layouts accepted: {accepted}")
    layout = max(layouts, key=lambda lay: sum(_exists(src, p) for p in lay.paths()))
    if not any(_exists(src, p) for p in layout.paths()):
        raise DataError(f"{fmt}: '{src}' holds none of the layouts accepted: {accepted}")
    if wanted:
        for split in wanted:
            if split not in layout.splits:
                raise DataError(f"{fmt}: --split {split}: the {layout.describe()} has splits "
                                f"{', '.join(layout.splits)}")
        splits = list(dict.fromkeys(wanted))
    else:
        splits = [s for s in layout.splits
                  if s not in layout.optional or all(_exists(src, p) for p in layout.splits[s])]
    for split in splits:
        for rel in layout.splits[split]:
            if not _exists(src, rel):
                complete = [s for s in layout.splits if all(_exists(src, p) for p in layout.splits[s])]
                hint = f" (or convert only --split {' '.join(complete)})" if complete and not wanted else ""
                kind, slash = ("folder", "/") if rel.endswith("/") else ("file", "")
                raise DataError(f"{fmt}: expected {kind} '{src / rel}{slash}' of the {layout.name}{hint}; "
                                f"layouts accepted: {accepted}")
    return layout, splits


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def add_source_arguments(parser, size: int) -> None:
    """--src, --size and --split, the options every converter of a downloaded dataset takes."""
    parser.add_argument("--src", type=Path, required=True, help="the dataset folder as downloaded")
    parser.add_argument("--size", type=positive_int, default=size, help=f"output side in pixels (default {size})")
    parser.add_argument("--split", nargs="+", metavar="SPLIT",
                        help="convert only these splits (default: every split the dataset has)")


class Item(NamedTuple):
    """One sample: `name` is its file under --src, or where its `pixels` (H x W [x C] uint8) came from."""
    name: str
    cls: int | None = None
    meta: dict | None = None
    pixels: np.ndarray | None = None
    key: str | None = None  # default: the file name without suffix


def sample_key(name: str) -> str:
    """A WebDataset key: the file stem, with dots (which split key from extension) and odd characters as '_'."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(name).stem)


def load_image(path: Path, mode: str) -> Image.Image | None:
    """The image at `path` as `mode` ("L" or "RGB"), or None when it is missing or cannot be decoded."""
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def fit(image: Image.Image, size: int, crop: int = 0) -> Image.Image:
    """Centre crop to `crop` px (default: the largest centred square), then resize to size x size."""
    w, h = image.size
    side = min(crop or min(w, h), w, h)
    if (w, h) != (side, side):
        left, top = (w - side) // 2, (h - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.LANCZOS if size < side else Image.BICUBIC)
    return image


def progress(items, desc: str, total: int | None = None, unit: str = "img"):
    """A progress bar on stderr (images done, rate, time left) for a long quiet step."""
    return tqdm(items, desc=desc, unit=unit, total=total, mininterval=2.0, smoothing=0.1)


def prepare(job: tuple) -> tuple[str, bytes, tuple[int, int]] | None:
    """One item -> (extension, encoded bytes, its size before fitting), or None when its image cannot be
    read. Runs in a worker."""
    src, item, mode, size, crop, encoding = job
    from shards.writer import encode

    if item.pixels is None:
        image = load_image(src / item.name, mode)
    elif item.pixels.size == 0:
        image = None
    else:
        image = Image.fromarray(item.pixels).convert(mode)
    return None if image is None else (*encode(fit(image, size, crop), encoding), image.size)


def describe_sizes(sizes: Counter) -> str:
    """'48x48' or '28x28 to 300x200' (fewest and most pixels) for the sizes images had."""
    small, large = (min(sizes, key=lambda s: (s[0] * s[1], s)), max(sizes, key=lambda s: (s[0] * s[1], s)))
    return f"{small[0]}x{small[1]}" + (f" to {large[0]}x{large[1]}" if large != small else "")


def write_items(writer, desc: str, src: Path | None, split: str, items: list[Item], mode: str,
                size: int, crop: int = 0) -> None:
    """Read, fit, encode and write one split, in `writer.workers` processes; an image that cannot be read
    is skipped and named in the index. When images are cropped or resized, one line says so."""
    jobs = ((src, item, mode, size, crop, writer.encoding) for item in items)
    workers = max(1, min(writer.workers, len(items) // 64 or 1))
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    sizes = Counter()
    try:  # imap keeps the order, so the shards do not depend on the number of workers
        results = pool.imap(prepare, jobs, chunksize=32) if pool else map(prepare, jobs)
        for item, encoded in zip(items, progress(results, f"{desc} {split}", total=len(items))):
            if encoded is None:
                writer.skip(item.name)
                continue
            ext, data, original = encoded
            sizes[original] += 1
            writer.add_encoded(split, item.key or sample_key(item.name), ext, data, cls=item.cls,
                               meta={"file": item.name, **(item.meta or {})})
    finally:
        if pool:
            pool.terminate()
    changed = Counter({s: n for s, n in sizes.items() if s != (size, size)})
    if changed:  # never resize silently: a 48 px set trained as 64 px is the user's call to make
        how = (f"centre-cropped to {crop}x{crop} and resized" if crop else
               "resized" if all(w == h for w, h in changed) else "centre-cropped square and resized")
        print(f"{desc} {split}: {how} {sum(changed.values())} of {sum(sizes.values())} images from "
              f"{describe_sizes(changed)} px to {size}x{size} px (--size {size})")


def list_images(src: Path, folder: str) -> list[str]:
    """Image files (by suffix) in `src/folder`, as sorted paths relative to src; none is a DataError."""
    names = sorted(p.name for p in (src / folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise DataError(f"folder '{src / folder}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [f"{folder.rstrip('/')}/{name}" for name in names]


def read_csv(path: Path, first: str = "image_name") -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows of a csv whose header starts with `first`."""
    with open(path, newline="") as f:
        rows = [(i, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f), 1) if row]
    if not rows or rows[0][1][0] != first:
        raise DataError(f"'{path}': the first line must be a header starting with '{first}'")
    return rows[0][1], rows[1:]


def parse_digit(text: str, where: str) -> int:
    """A label 0..9, or a DataError naming the file and line."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value not in range(10):
        raise DataError(f"{where}: label '{text}' is not a digit 0..9")
    return int(value)
