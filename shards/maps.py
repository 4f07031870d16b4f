"""`maps`: the CycleGAN/pix2pix maps dataset (aerial photo <-> map) as two shard sets, OUT/A and OUT/B.

    python -m shards maps --src RAW_DIR --out data/maps [--size 256] [--split train test]

Writes two complete shard folders, OUT_DIR/A (aerial photos) and OUT_DIR/B (maps), each with its own
index.json (`domain` "A" or "B") and splits train and test, so each is a normal `data.root`.
Layouts accepted in RAW_DIR:
- CycleGAN layout: `trainA/*.jpg`, `trainB/*.jpg`, `testA/`, `testB/` (unpaired)
- pix2pix layout: `train/1.jpg`, `val/1.jpg`, each image A (left half) and B (right half) side by
  side; `val/` becomes the split `test`, and a pair keeps the same key in A and B (and the same `file`
  in its .json): launch/evaluate.py --metrics pixel pairs each photo with its map by them
"""
from __future__ import annotations

from shards.common import (Item, Layout, add_source_arguments, fit, list_images, load_image, pick_layout,
                           progress, sample_key, write_items)

CYCLEGAN = Layout("CycleGAN layout", {"train": ("trainA/", "trainB/"), "test": ("testA/", "testB/")})
PIX2PIX = Layout("pix2pix layout", {"train": ("train/",), "test": ("val/",)})
DOMAINS = ("A", "B")


def add_arguments(parser) -> None:
    add_source_arguments(parser, size=256)


def write_pairs(args, writers, split: str, names: list[str]) -> None:
    """Cut each side-by-side image into its left (A) and right (B) halves."""
    for name in progress(names, f"maps {split}"):
        image = load_image(args.src / name, "RGB")
        if image is None:
            for writer in writers.values():
                writer.skip(name)
            continue
        w, h = image.size
        halves = {"A": (0, 0, w // 2, h), "B": (w // 2, 0, w // 2 * 2, h)}
        for domain, box in halves.items():
            writers[domain].add(split, sample_key(name), fit(image.crop(box), args.size),
                                meta={"file": name, "half": "left" if domain == "A" else "right"})


def convert(args, writer) -> dict:
    layout, splits = pick_layout("maps", args.src, [CYCLEGAN, PIX2PIX], args.split)
    files = {split: [list_images(args.src, folder) for folder in layout.splits[split]] for split in splits}
    writers = {domain: writer.part(domain) for domain in DOMAINS}
    for split in splits:
        if layout is PIX2PIX:
            write_pairs(args, writers, split, files[split][0])
        else:
            for domain, names in zip(DOMAINS, files[split]):
                write_items(writers[domain], f"maps {domain}", args.src, split, [Item(n) for n in names],
                            "RGB", args.size)
    return {"format": "maps", "layout": layout.name, "image_size": args.size, "channels": 3,
            "class_names": [], "attr_names": [], "domains": {"A": "aerial photo", "B": "map"}}
