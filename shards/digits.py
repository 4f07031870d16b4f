"""`digits`: the 1,797 real 8x8 handwritten digits that ship inside scikit-learn, as 32x32 grey shards.

    python -m shards digits --out data/digits [--size 32] [--test-fraction 0.2] [--seed 0]

No download: `sklearn.datasets.load_digits()` reads a file inside the scikit-learn package.
The train/test split is a seeded, class-stratified permutation, so it is the same on every machine.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from tqdm import tqdm

SAMPLES_PER_SHARD = 256  # small data, but several shards so ranks and workers can split them


def add_arguments(parser) -> None:
    parser.add_argument("--size", type=int, default=32, help="output side in pixels (default 32)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Per-class seeded shuffle; the first `test_fraction` of each class goes to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return {"train": rng.permutation(train), "test": rng.permutation(test)}


def digit_image(pixels_8x8: np.ndarray, size: int) -> Image.Image:
    """0..16 intensities -> 0..255 grey, upsampled smoothly to size x size."""
    small = Image.fromarray((pixels_8x8 * (255.0 / 16.0)).round().astype(np.uint8), mode="L")
    return small.resize((size, size), Image.BICUBIC)


def convert(args, writer) -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    splits = split_indices(digits.target, args.test_fraction, args.seed)
    for split, indices in splits.items():
        for i in tqdm(indices, desc=f"digits {split}", unit="img", leave=False):
            writer.add(split, f"digit{i:05d}", digit_image(digits.images[i], args.size),
                       cls=int(digits.target[i]), meta={"source_index": int(i)})
    return {"format": "digits", "image_size": args.size, "channels": 1,
            "class_names": [str(d) for d in range(10)], "attr_names": [], "seed": args.seed}
