"""`anime`: anime faces with hair and eye colour tags, as RGB shards with a (hair, eye) class.

    python -m shards anime --src RAW_DIR --out data/anime [--size 64]

RAW_DIR holds `images/0.jpg ...` and `tags.csv` without a header: `0,aqua hair aqua eyes` (the
image id, then hair colour word 1 and eye colour word 3). The dataset has one split, `train`.

index.json gets `tags`, the vocabulary {"hair": [...], "eye": [...]} (sorted colours seen in
tags.csv), and `class_names` "<hair> hair <eye> eyes" for every pair; each sample has
`cls` = hair_index * len(eye) + eye_index and its colours in json `tags` {"hair": ..., "eye": ...}.
"""
from __future__ import annotations

import csv
from pathlib import Path

from distgen.errors import DataError
from shards.common import Item, Layout, add_source_arguments, pick_layout, write_items

FILES = Layout("tagged images", {"train": ("images/", "tags.csv")})


def add_arguments(parser) -> None:
    add_source_arguments(parser, size=64)


def read_tags(path: Path) -> list[tuple[str, str, str]]:
    """(image id, hair, eye) per line of tags.csv."""
    rows = []
    with open(path, newline="") as f:
        for line, cells in enumerate(csv.reader(f), 1):
            if not cells:
                continue
            words = cells[1].split() if len(cells) == 2 else []
            if len(words) != 4 or words[1] != "hair" or words[3] not in ("eyes", "eye"):
                raise DataError(f"{path}:{line}: expected 'ID,<colour> hair <colour> eyes', got '{','.join(cells)}'")
            rows.append((cells[0].strip(), words[0], words[2]))
    if not rows:
        raise DataError(f"'{path}' lists no images")
    return rows


def convert(args, writer) -> dict:
    _, splits = pick_layout("anime", args.src, [FILES], args.split)
    rows = read_tags(args.src / "tags.csv")
    hair = sorted({h for _, h, _ in rows})
    eye = sorted({e for _, _, e in rows})
    hair_at, eye_at = {h: i for i, h in enumerate(hair)}, {e: i for i, e in enumerate(eye)}
    suffixes = {p.stem: p.suffix for p in (args.src / "images").iterdir()}  # the release uses .jpg
    items = [Item(f"images/{image_id}{suffixes.get(image_id, '.jpg')}", hair_at[h] * len(eye) + eye_at[e],
                  meta={"tags": {"hair": h, "eye": e}})
             for image_id, h, e in rows]
    for split in splits:
        write_items(writer, "anime", args.src, split, items, "RGB", args.size)
    return {"format": "anime", "layout": FILES.name, "image_size": args.size, "channels": 3,
            "class_names": [f"{h} hair {e} eyes" for h in hair for e in eye], "attr_names": [],
            "tags": {"hair": hair, "eye": eye}}
