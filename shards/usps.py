"""`usps`: USPS handwritten digits (16x16 grey, or 28x28 in the course layout) as labelled grey shards.

    python -m shards usps --src RAW_DIR --out data/usps [--size 32] [--split train test]

Layouts accepted in RAW_DIR:
- course layout: `train/00000.png` + `train.csv` (`image_name,label`), `test/` + `test.csv`
- `usps.h5`: groups `train` and `test`, each with `data` (N x 256 floats in 0..1) and `target` (N)
- libsvm files `usps.bz2` (train) and `usps.t.bz2` (test): lines `label 1:v ... 256:v` with labels
  1..10 meaning digit label-1 and values in -1..1; a line that cannot be parsed is skipped by name
The default size is 32 so that usps lines up with the other digit shard sets.
"""
from __future__ import annotations

import bz2
from pathlib import Path

import numpy as np

from distgen.errors import DataError
from shards.common import UNREADABLE, Item, Layout, add_source_arguments, parse_digit
from shards.labelled import COURSE, convert_labelled, course_items

H5 = Layout("HDF5 file", {"train": ("usps.h5",), "test": ("usps.h5",)})
LIBSVM = Layout("libsvm files", {"train": ("usps.bz2",), "test": ("usps.t.bz2",)})
SIDE = 16


def add_arguments(parser) -> None:
    add_source_arguments(parser, size=32)


def to_uint8(values: np.ndarray, low: float) -> np.ndarray:
    """Intensities in low..1 -> 0..255 grey, 16x16."""
    scaled = (np.asarray(values, np.float64) - low) / (1.0 - low) * 255.0
    return np.clip(scaled.round(), 0, 255).astype(np.uint8).reshape(SIDE, SIDE)


def h5_items(src: Path, split: str) -> list[Item]:
    import h5py

    path = src / "usps.h5"
    try:
        with h5py.File(path, "r") as f:
            data, target = f[split]["data"][()], f[split]["target"][()]
    except (OSError, KeyError) as exc:
        raise DataError(f"'{path}': expected group '{split}' with datasets 'data' (N x 256) and 'target' (N); "
                        f"{exc}") from None
    if data.ndim != 2 or data.shape[1] != SIDE * SIDE or len(target) != len(data):
        raise DataError(f"'{path}': {split}/data has shape {data.shape} and {split}/target {target.shape}; "
                        f"expected (N, 256) and (N,)")
    return [Item(f"usps.h5:{split}[{i}]", parse_digit(str(t), f"{path}:{split}/target[{i}]"),
                 pixels=to_uint8(row, 0.0), key=f"{split}_{i:06d}")
            for i, (row, t) in enumerate(zip(data, target))]


def parse_libsvm_line(text: str) -> tuple[int, np.ndarray]:
    """`label i:v ...` -> (digit, 16x16 uint8); raises ValueError for anything else."""
    label, *pairs = text.split()
    digit = int(float(label)) - 1
    if digit not in range(10):
        raise ValueError(f"label {label}")
    values = np.zeros(SIDE * SIDE)  # libsvm leaves out zero features
    for pair in pairs:
        index, value = pair.split(":")
        if not 1 <= int(index) <= SIDE * SIDE:
            raise ValueError(f"feature index {index}")
        values[int(index) - 1] = float(value)
    return digit, to_uint8(values, -1.0)


def libsvm_items(src: Path, split: str) -> list[Item]:
    name = {"train": "usps.bz2", "test": "usps.t.bz2"}[split]
    try:
        with bz2.open(src / name, "rt") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"'{src / name}' is not a readable bz2 libsvm file ({exc})") from None
    items = []
    for line, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            digit, pixels = parse_libsvm_line(text)
        except ValueError:
            digit, pixels = None, UNREADABLE
        items.append(Item(f"{name}:{line}", digit, pixels=pixels, key=f"{split}_{line:06d}"))
    return items


def convert(args, writer) -> dict:
    return convert_labelled(args, writer, "usps",
                            [(COURSE, course_items), (H5, h5_items), (LIBSVM, libsvm_items)], "L")
