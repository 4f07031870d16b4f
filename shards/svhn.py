"""`svhn`: SVHN cropped digits (32x32 RGB house numbers) as labelled RGB shards.

    python -m shards svhn --src RAW_DIR --out data/svhn [--size 32] [--split train test extra]

Layouts accepted in RAW_DIR:
- course layout: `train/00000.png` + `train.csv` (`image_name,label`), `test/` + `test.csv`
- the MATLAB files `train_32x32.mat`, `test_32x32.mat` (and `extra_32x32.mat`, converted when
  present): `X` uint8 (32, 32, 3, N), `y` (N, 1) with labels 1..10, where 10 means digit 0
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from distgen.errors import DataError
from shards.common import Item, Layout, add_source_arguments
from shards.labelled import COURSE, convert_labelled, course_items

MAT = Layout("MATLAB files", {s: (f"{s}_32x32.mat",) for s in ("train", "test", "extra")}, optional=("extra",))


def add_arguments(parser) -> None:
    add_source_arguments(parser, size=32)


def mat_items(src: Path, split: str) -> list[Item]:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    path = src / f"{split}_32x32.mat"
    try:
        mat = loadmat(path, variable_names=("X", "y"))
        images, labels = mat["X"], np.asarray(mat["y"]).reshape(-1)
    except (MatReadError, NotImplementedError, OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"'{path}' is not a MATLAB v5 file with X (32, 32, 3, N) and y (N, 1): {exc}") from None
    if images.ndim != 4 or images.shape[2] != 3 or images.shape[3] != len(labels):
        raise DataError(f"'{path}': X has shape {images.shape} and y {mat['y'].shape}; "
                        f"expected (32, 32, 3, N) and (N, 1)")
    bad = np.flatnonzero(~np.isin(labels, np.arange(1, 11)))
    if len(bad):
        raise DataError(f"'{path}': y[{bad[0]}] is {labels[bad[0]]}; SVHN labels are 1..10 (10 means digit 0)")
    images = images.astype(np.uint8, copy=False)
    return [Item(f"{path.name}[{i}]", int(y) % 10, pixels=images[..., i], key=f"{split}_{i:06d}")  # 10 -> 0
            for i, y in enumerate(labels)]


def convert(args, writer) -> dict:
    return convert_labelled(args, writer, "svhn", [(COURSE, course_items), (MAT, mat_items)], "RGB")
