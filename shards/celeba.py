"""`celeba`: CelebA's aligned faces with their 40 binary attributes, centre-cropped and resized (64x64 RGB).

    python -m shards celeba --src RAW_DIR --out data/celeba64 [--size 64] [--crop 140] [--split train val test]

RAW_DIR is the official release: `img_align_celeba/000001.jpg ...` (178x218), `list_attr_celeba.txt`
(line 1 the image count, line 2 the 40 attribute names, then `000001.jpg -1  1 ...` with runs of
spaces) and `list_eval_partition.txt` (`000001.jpg 0`; 0 train, 1 val, 2 test). Each sample's
json holds `attrs`, the attributes in index.json's `attr_names` order as 1.0 (has it) / 0.0.
"""
from __future__ import annotations

from pathlib import Path

from distgen.errors import DataError
from shards.common import Item, Layout, add_source_arguments, pick_layout, positive_int, write_items

FILES = ("img_align_celeba/", "list_attr_celeba.txt", "list_eval_partition.txt")
PARTITIONS = {"0": "train", "1": "val", "2": "test"}
RELEASE = Layout("official aligned release", {split: FILES for split in PARTITIONS.values()})


def add_arguments(parser) -> None:
    add_source_arguments(parser, size=64)
    parser.add_argument("--crop", type=positive_int, default=140,
                        help="side of the centre crop taken before resizing (default 140)")


def read_attributes(path: Path) -> tuple[list[str], dict[str, list[float]]]:
    """Attribute names and, per image file, its values as 1.0/0.0; checks the count on line 1."""
    lines = path.read_text().splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DataError(f"'{path}': line 1 must be the image count and line 2 the attribute names")
    names = lines[1].split()
    rows = {}
    for line, text in enumerate(lines[2:], 3):
        words = text.split()
        if not words:
            continue
        if len(words) != len(names) + 1 or any(w not in ("1", "-1") for w in words[1:]):
            raise DataError(f"{path}:{line}: expected a file name and {len(names)} values 1/-1")
        rows[words[0]] = [1.0 if w == "1" else 0.0 for w in words[1:]]
    if len(rows) != int(lines[0]):
        raise DataError(f"'{path}' lists {len(rows)} images but line 1 says {lines[0].strip()}; is it complete?")
    return names, rows


def read_partition(path: Path, attrs: dict) -> dict[str, list[str]]:
    """Files per split, in file order; every file needs an attribute row."""
    splits = {split: [] for split in PARTITIONS.values()}
    for line, text in enumerate(path.read_text().splitlines(), 1):
        words = text.split()
        if not words:
            continue
        if len(words) != 2 or words[1] not in PARTITIONS:
            raise DataError(f"{path}:{line}: expected 'FILE 0|1|2', got '{text}'")
        if words[0] not in attrs:
            raise DataError(f"{path}:{line}: '{words[0]}' has no row in list_attr_celeba.txt")
        splits[PARTITIONS[words[1]]].append(words[0])
    return splits


def convert(args, writer) -> dict:
    _, splits = pick_layout("celeba", args.src, [RELEASE], args.split)
    names, attrs = read_attributes(args.src / "list_attr_celeba.txt")
    files = read_partition(args.src / "list_eval_partition.txt", attrs)
    for split in splits:
        items = [Item(f"img_align_celeba/{name}", meta={"attrs": dict(zip(names, attrs[name]))})
                 for name in files[split]]
        write_items(writer, "celeba", args.src, split, items, "RGB", args.size, crop=args.crop)
    return {"format": "celeba", "layout": RELEASE.name, "image_size": args.size, "channels": 3,
            "class_names": [], "attr_names": names, "crop": args.crop}
