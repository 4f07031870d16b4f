"""`faces`: course-style 64x64 face folders, optionally with binary attributes, as RGB shards.

    python -m shards faces --src RAW_DIR --out data/faces [--size 64] [--split train test]

RAW_DIR holds `train/00000.png ...` and `test/...`, and optionally `train.csv` / `test.csv` with
the header `image_name,<attr>,<attr>,...` (e.g. Smiling, Male) and 0/1 or 0.0/1.0 values. With the
CSVs each sample's json holds `attrs` in index.json's `attr_names` order (1.0/0.0) and the CSV
decides which images are converted; without them every image in the folders is, unlabelled.
"""
from __future__ import annotations

from pathlib import Path

from distgen.errors import DataError
from shards.common import Item, Layout, add_source_arguments, list_images, pick_layout, read_csv, write_items

FOLDERS = Layout("face folders", {"train": ("train/",), "test": ("test/",)})


def add_arguments(parser) -> None:
    add_source_arguments(parser, size=64)


def csv_items(src: Path, split: str) -> tuple[list[str], list[Item]]:
    """Attribute names and one item per row of `split.csv`."""
    path = src / f"{split}.csv"
    header, rows = read_csv(path)
    names, items = header[1:], []
    for line, cells in rows:
        try:
            values = [float(v) for v in cells[1:]]
        except ValueError:
            values = []
        if len(values) != len(names) or any(v not in (0.0, 1.0) for v in values):
            raise DataError(f"{path}:{line}: expected an image name and {len(names)} values 0/1")
        items.append(Item(f"{split}/{cells[0]}", meta={"attrs": dict(zip(names, values))}))
    return names, items


def convert(args, writer) -> dict:
    _, splits = pick_layout("faces", args.src, [FOLDERS], args.split)
    with_csv = [split for split in splits if (args.src / f"{split}.csv").is_file()]
    if with_csv and len(with_csv) != len(splits):
        missing = next(s for s in splits if s not in with_csv)
        raise DataError(f"faces: found '{args.src / with_csv[0]}.csv' but not '{args.src / missing}.csv'; "
                        f"give every split its attribute csv, or none")
    attr_names, items = [], {}
    for split in splits:  # read and check every csv before writing
        if with_csv:
            names, items[split] = csv_items(args.src, split)
            if attr_names and names != attr_names:
                raise DataError(f"faces: '{args.src / split}.csv' has attributes {names}, not {attr_names}")
            attr_names = names
        else:
            items[split] = [Item(name) for name in list_images(args.src, f"{split}/")]
    for split, split_items in items.items():
        write_items(writer, "faces", args.src, split, split_items, "RGB", args.size)
    return {"format": "faces", "layout": FOLDERS.name + (" with attribute csv" if with_csv else ""),
            "image_size": args.size, "channels": 3, "class_names": [], "attr_names": attr_names}
