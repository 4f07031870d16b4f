"""Labelled digit datasets (mnistm, usps, svhn): the layouts they share and the conversion they share.

Not a format itself; `python -m shards mnistm|usps|svhn --src RAW_DIR --out OUT_DIR` use it. Each of
those modules lists its accepted layouts as (Layout, reader) pairs; a reader turns one split into
`Item`s (file names or pixel arrays, with labels 0..9) and checks its label files, so a malformed
layout is reported before anything is written.

Shared here: the course layout `train/00000.png` + `train.csv` (`image_name,label`), same for test.
"""
from __future__ import annotations

from pathlib import Path

from distgen.errors import DataError
from shards.common import DIGIT_NAMES, Item, Layout, pick_layout, read_csv, parse_digit, write_items

COURSE = Layout("course layout", {"train": ("train/", "train.csv"), "test": ("test/", "test.csv")})


def course_items(src: Path, split: str) -> list[Item]:
    """`split.csv` rows `image_name,label` naming files in `split/`."""
    path = src / f"{split}.csv"
    header, rows = read_csv(path)
    if "label" not in header:
        raise DataError(f"'{path}': the header must be 'image_name,label' (it is '{','.join(header)}')")
    at = header.index("label")
    return [Item(f"{split}/{cells[0]}", parse_digit(cells[at] if at < len(cells) else "", f"{path}:{line}"))
            for line, cells in rows]


def convert_labelled(args, writer, fmt: str, readers: list[tuple[Layout, callable]], mode: str) -> dict:
    """Find the layout, read every split's labels (all checks first), then write the images."""
    layout, splits = pick_layout(fmt, args.src, [layout for layout, _ in readers], args.split)
    read = dict((lay.name, reader) for lay, reader in readers)[layout.name]
    items = {split: read(args.src, split) for split in splits}
    for split, split_items in items.items():
        write_items(writer, fmt, args.src, split, split_items, mode, args.size)
    return {"format": fmt, "layout": layout.name, "image_size": args.size, "channels": len(mode),
            "class_names": DIGIT_NAMES, "attr_names": []}
