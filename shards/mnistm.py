"""`mnistm`: MNIST-M (MNIST digits blended over photo patches), 28x28 RGB, as labelled RGB shards.

    python -m shards mnistm --src RAW_DIR --out data/mnistm [--size 32] [--split train test]

Layouts accepted in RAW_DIR:
- course layout: `train/00000.png` + `train.csv` (`image_name,label`), `test/` + `test.csv`
- original release: `mnist_m_train/00000000.png` + `mnist_m_train_labels.txt` (`00000000.png 5`),
  same for `mnist_m_test`
The default size is 32 so that mnistm lines up with the other digit shard sets.
"""
from __future__ import annotations

from pathlib import Path

from distgen.errors import DataError
from shards.common import Item, Layout, add_source_arguments, parse_digit
from shards.labelled import COURSE, convert_labelled, course_items

ORIGINAL = Layout("original release", {
    split: (f"mnist_m_{split}/", f"mnist_m_{split}_labels.txt") for split in ("train", "test")})


def add_arguments(parser) -> None:
    add_source_arguments(parser, size=32)


def original_items(src: Path, split: str) -> list[Item]:
    """`mnist_m_{split}_labels.txt` lines `00000000.png 5` naming files in `mnist_m_{split}/`."""
    path = src / f"mnist_m_{split}_labels.txt"
    items = []
    for line, text in enumerate(path.read_text().splitlines(), 1):
        words = text.split()
        if not words:
            continue
        if len(words) != 2:
            raise DataError(f"{path}:{line}: expected 'FILE LABEL', got '{text}'")
        items.append(Item(f"mnist_m_{split}/{words[0]}", parse_digit(words[1], f"{path}:{line}")))
    return items


def convert(args, writer) -> dict:
    return convert_labelled(args, writer, "mnistm", [(COURSE, course_items), (ORIGINAL, original_items)], "RGB")
