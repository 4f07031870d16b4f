"""`folder`: your own images, one folder per class (torchvision's ImageFolder layout) or all in one folder.

    python -m shards folder --src MY_IMAGES --out data/mine [--size 64] [--test-fraction 0.1] [--seed 0]

Layouts under --src (image files by suffix: .png .jpg .jpeg .bmp .gif .webp):

    cat/001.jpg, cat/002.png, dog/x.jpg ...     one folder per class: class names are the folder names,
                                                sorted (class 0 is the first), as torchvision's ImageFolder;
                                                images in deeper folders belong to their top class folder
    001.jpg, 002.png ...                        one flat folder: unlabelled
    train/..., test/...                         either layout under `train/` (and `test/`, `val/`): those
                                                folders are the splits, as given

Without split folders a seeded test split is drawn (`--test-fraction`, default 0.1, stratified by class;
`--seed`). Images of any size and mode (grey, RGB, RGBA, palette, 16-bit) are centre-cropped square and
resized to --size (default 64), and the converter prints how many it resized from which sizes. The shards
are grey when every image is grey (L, LA, 1, I, I;16), else RGB; `--channels 1|3` chooses. A file that
cannot be decoded is skipped and named in index.json (`skipped`), as in every converter.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from distgen.errors import DataError
from shards.common import IMAGE_SUFFIXES, Item, positive_int, write_items

SPLIT_FOLDERS = ("train", "val", "test")  # top-level folders taken as splits, in this order
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def add_arguments(parser) -> None:
    parser.add_argument("--src", type=Path, required=True,
                        help="a folder of class folders (cat/, dog/, ...), or of images, or train/ and test/ of either")
    parser.add_argument("--size", type=positive_int, default=64, help="output side in pixels (default 64)")
    parser.add_argument("--test-fraction", type=float, default=0.1,
                        help="share of each class drawn for the test split when --src has no train/ test/ "
                             "folders (default 0.1; 0 = no test split)")
    parser.add_argument("--seed", type=int, default=0, help="seed of that draw (default 0)")
    parser.add_argument("--channels", type=int, choices=(0, 1, 3), default=0,
                        help="1 = grey, 3 = RGB, 0 = grey only when every image is grey (default)")


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def scan(folder: Path, src: Path) -> tuple[list[str], list[tuple[str, int | None]]]:
    """(class names, [(file relative to src, class or None)]) of one split folder, in a fixed order."""
    loose = sorted(p for p in folder.iterdir() if is_image(p))
    class_dirs = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: p.name)
    classes = {d.name: sorted(p for p in d.rglob("*") if is_image(p)) for d in class_dirs}
    classes = {name: files for name, files in classes.items() if files}  # ImageFolder skips empty class folders
    if loose and classes:
        raise DataError(f"folder: '{folder}' holds both images ({loose[0].name}, ...) and class folders "
                        f"({', '.join(list(classes)[:3])}, ...); put every image in its class folder, or "
                        f"use a flat folder for unlabelled images")
    if not loose and not classes:
        raise DataError(f"folder: '{folder}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                        f"neither directly nor in class folders")
    if loose:
        return [], [(str(p.relative_to(src)), None) for p in loose]
    names = list(classes)
    return names, [(str(p.relative_to(src)), c) for c, name in enumerate(names) for p in classes[name]]


def stratified_split(labels: list[int | None], test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Per-class seeded shuffle: round(test_fraction x class size) of each class go to test."""
    rng = np.random.default_rng(seed)
    labels = np.array([-1 if c is None else c for c in labels])
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.extend(idx[:n_test].tolist())
        train.extend(idx[n_test:].tolist())
    return {"train": sorted(train), "test": sorted(test)}


def all_grey(src: Path, files: list[str]) -> bool:
    """Whether every readable image is grey, from the headers (no decoding)."""
    for name in files:
        try:
            with Image.open(src / name) as image:
                if image.mode not in GREY_MODES:
                    return False
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue  # unreadable: skipped when written
    return True


def convert(args, writer) -> dict:
    src = args.src
    if not src.is_dir():
        raise DataError(f"folder: --src '{src}' is not a folder; give a folder of class folders or of images")
    if not 0.0 <= args.test_fraction < 1.0:
        raise DataError(f"folder: --test-fraction {args.test_fraction} must be in [0, 1)")
    split_dirs = [s for s in SPLIT_FOLDERS if (src / s).is_dir()]
    if split_dirs:  # the user's own splits
        if "train" not in split_dirs:
            raise DataError(f"folder: '{src}' has {', '.join(s + '/' for s in split_dirs)} but no train/; "
                            f"add train/, or convert the folder holding the images itself")
        scanned = {s: scan(src / s, src) for s in split_dirs}
        class_names = scanned["train"][0]
        for split, (names, _) in scanned.items():
            if names != class_names:
                raise DataError(f"folder: '{src / split}' has classes {names or 'none (a flat folder)'} but "
                                f"'{src / 'train'}' has {class_names or 'none (a flat folder)'}; give every "
                                f"split the same class folders")
        files = {split: entries for split, (_, entries) in scanned.items()}
        layout = f"{'class folders' if class_names else 'flat folder'} in {', '.join(s + '/' for s in split_dirs)}"
    else:
        class_names, entries = scan(src, src)
        parts = stratified_split([c for _, c in entries], args.test_fraction, args.seed)
        files = {split: [entries[i] for i in idx] for split, idx in parts.items() if idx}
        layout = (f"{'class folders' if class_names else 'flat folder'}, seeded test split "
                  f"(--test-fraction {args.test_fraction}, --seed {args.seed})")
    channels = args.channels or (1 if all_grey(src, [f for e in files.values() for f, _ in e]) else 3)
    print(f"folder: {layout}; {len(class_names) or 'no'} classes{': ' if class_names else ''}"
          f"{', '.join(class_names[:10])}{', ...' if len(class_names) > 10 else ''}; "
          f"{'grey' if channels == 1 else 'RGB'} (--channels), {args.size}x{args.size} px (--size)")
    for split, entries in files.items():
        # the key is the whole relative path (cat/001.jpg -> cat_001_jpg): file names repeat across classes
        items = [Item(name, cls, key=re.sub(r"[^A-Za-z0-9_-]", "_", name)) for name, cls in entries]
        write_items(writer, "folder", src, split, items, "L" if channels == 1 else "RGB", args.size)
    return {"format": "folder", "layout": layout, "image_size": args.size, "channels": channels,
            "class_names": class_names, "attr_names": [],
            **({} if split_dirs else {"test_fraction": args.test_fraction, "seed": args.seed})}
