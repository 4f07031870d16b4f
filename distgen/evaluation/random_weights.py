"""A random-weight InceptionV3 weights file for tests and benchmarks that must not download anything.

    python -m distgen.evaluation.random_weights OUT.pth [--seed 0]

Never use it for numbers you report: it only lets the FID/IS/KID/PRC pipeline run offline. An
uncalibrated random net maps every image to nearly the same features (its BatchNorm running
statistics are the defaults 0 and 1), so the BatchNorm statistics are first measured on some
images (uniform noise by default; pass images like the ones to be scored to keep features in a
sane range); then different images give clearly different features and FID is far from zero.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from distgen.evaluation.inception import EXTRACTOR, as_rgb


class _RandomInit(FeatureExtractorInceptionV3):
    """torch-fidelity's net with PyTorch's default random initial weights (nothing is loaded)."""

    def load_state_dict(self, state_dict, *args, **kwargs):
        return None


def make_random_weights(out: str | Path, seed: int = 0, images: torch.Tensor | None = None) -> Path:
    """Write the weights file; `images`: uint8 NCHW (grey or RGB) to calibrate BatchNorm on."""
    out = Path(out)
    with torch.random.fork_rng(devices=[]), tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(seed)
        if images is None:
            images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)  # a path, so torch-fidelity's constructor does not reach for the network
        net = _RandomInit(EXTRACTOR, ["2048"], feature_extractor_weights_path=str(empty))
        for m in net.modules():  # BatchNorm: measure running statistics (cumulative average) ...
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
                m.train()
        with torch.no_grad():  # ... on the calibration images, in one batch
            net(as_rgb(images))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_random_weights(args.out, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
