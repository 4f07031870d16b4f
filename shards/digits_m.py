"""`digits-m`: an embedded MNIST-M analogue, scikit-learn's digits blended over patches of colour photos.

    python -m shards digits-m --out data/digits-m [--size 32] [--test-fraction 0.2] [--seed 0]

No download: the digits (`load_digits()`) and the two photos (`load_sample_images()`: china.jpg,
flower.jpg) ship inside scikit-learn. As MNIST-M does, each digit is blended over a random
size x size crop of a photo as |patch - digit|, so strokes invert the photo's colours. The crops
are drawn from one seeded generator and the train/test split is the one `digits` uses (same seed,
same keys), so digits -> digits-m is a source -> target domain shift of the same samples.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from shards import digits as plain
from shards.common import DIGIT_NAMES, progress

SAMPLES_PER_SHARD = plain.SAMPLES_PER_SHARD


def add_arguments(parser) -> None:
    plain.add_arguments(parser)  # the same options as digits: --size, --test-fraction, --seed


def blend(digit: Image.Image, photo: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """|patch - digit| over a random crop of `photo` (H x W x 3 uint8), and where the crop came from."""
    size = digit.size[0]
    y = int(rng.integers(0, photo.shape[0] - size + 1))
    x = int(rng.integers(0, photo.shape[1] - size + 1))
    patch = photo[y:y + size, x:x + size].astype(np.int16)
    strokes = np.asarray(digit, np.int16)[..., None]
    return Image.fromarray(np.abs(patch - strokes).astype(np.uint8), "RGB"), {"y": y, "x": x}


def convert(args, writer) -> dict:
    from sklearn.datasets import load_digits, load_sample_images

    digits, photos = load_digits(), load_sample_images()
    names = [Path(path).name for path in photos.filenames]
    rng = np.random.default_rng(args.seed)
    blended = {}  # every digit's photo and crop, drawn in digit order so the split does not change them
    for i, pixels in enumerate(digits.images):
        p = int(rng.integers(len(photos.images)))
        image, crop = blend(plain.digit_image(pixels, args.size), photos.images[p], rng)
        blended[i] = (image, {"source_index": i, "photo": names[p], **crop})
    for split, indices in plain.split_indices(digits.target, args.test_fraction, args.seed).items():
        for i in progress(indices, f"digits-m {split}"):
            image, meta = blended[int(i)]
            writer.add(split, f"digit{i:05d}", image, cls=int(digits.target[i]), meta=meta)
    return {"format": "digits-m", "image_size": args.size, "channels": 3, "class_names": DIGIT_NAMES,
            "attr_names": [], "seed": args.seed}
