"""torch-fidelity's InceptionV3 feature extractor, loaded from a local weights file only.

    weights = resolve_weights(None)            # --inception-weights PATH or $DISTGEN_INCEPTION_WEIGHTS
    net = load_extractor(weights, ["2048", "logits_unbiased"], device)
    feats = extract(net, as_rgb(to_uint8(images)), batch_size=64)

The extractor is torch-fidelity's own class built by torch-fidelity's own factory, so features are
the ones `torch_fidelity.calculate_metrics` computes. torch-fidelity downloads its weights when given
no path; this module never lets it: no path is a ConfigError that says how to provide one.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from functools import lru_cache
from pathlib import Path

import torch
from tqdm import tqdm
from PIL import Image
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3
from torch_fidelity.utils import create_feature_extractor

from distgen.errors import ConfigError

WEIGHTS_ENV = "DISTGEN_INCEPTION_WEIGHTS"
EXTRACTOR = "inception-v3-compat"  # torch-fidelity's registry name of FeatureExtractorInceptionV3
FEATURE_DIMS = {"2048": 2048, "logits_unbiased": 1008, "logits": 1008}


def layer_for(metric: str) -> str:
    """torch-fidelity's default feature layer of a metric (isc: logits_unbiased; fid, kid, prc: 2048)."""
    return FeatureExtractorInceptionV3.get_default_feature_layer_for_metric(metric)


def resolve_weights(path: str | Path | None, how: str = "") -> Path:
    """The local InceptionV3 weights file to use; a ConfigError (never a download) when there is none.
    `how` says how to give one in the caller's terms (default: evaluate.py's flag)."""
    given = str(path) if path else os.environ.get(WEIGHTS_ENV, "")
    how = how or (f"pass --inception-weights PATH or set {WEIGHTS_ENV}=PATH to a local copy of torch-fidelity's "
           f"InceptionV3 weights, downloaded once on a machine with network from {URL_INCEPTION_V3}")
    if not given:
        raise ConfigError(f"FID/IS/KID/PRC need InceptionV3 weights and this never downloads them; {how}")
    file = Path(given).expanduser()
    if not file.is_file():
        raise ConfigError(f"InceptionV3 weights file '{file}' does not exist; {how}")
    return file.resolve()


def file_sha256(path: str | Path) -> str:
    """Content hash of a file (memoised per path, size and mtime: periodic evaluation asks often)."""
    st = Path(path).stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_extractor(weights: Path, layers: list[str], device: torch.device | str = "cpu"):
    """torch-fidelity's extractor for `layers`, in eval mode on `device` (kept for the next call)."""
    st = weights.stat()
    return _load(str(weights), st.st_mtime_ns, tuple(sorted(set(layers))), str(device))


@lru_cache(maxsize=2)
def _load(weights: str, mtime_ns: int, layers: tuple[str, ...], device: str):
    # Building the net draws default initial weights from the global RNG; a training run that
    # evaluates periodically must draw the same noise as one that does not, so fork the RNG.
    with torch.random.fork_rng(devices=[]):
        try:
            net = create_feature_extractor(EXTRACTOR, list(layers), cuda=False, verbose=False,
                                           feature_extractor_weights_path=weights)
        except (RuntimeError, KeyError, EOFError, OSError, pickle.UnpicklingError) as exc:
            raise ConfigError(f"'{weights}' is not an InceptionV3 weights file torch-fidelity can load "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    return net.to(device)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float NCHW -> uint8 0..255 on the CPU, rounded as torchvision's save_image rounds, so
    the PNGs written by --save-samples hold exactly the values that were scored."""
    x = images.detach().float().cpu() * 0.5 + 0.5
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grey -> RGB by copying the channel: what torch-fidelity's PIL `.convert("RGB")` does to a grey file."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def save_pngs(images: torch.Tensor, indices, out_dir: Path) -> None:
    """uint8 images as lossless PNGs named by their global index, so a sorted listing is their order."""
    for image, i in zip(images, indices):  # grey stays grey ("L"): torch-fidelity reads files as RGB
        array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        Image.fromarray(array, "L" if image.shape[0] == 1 else "RGB").save(out_dir / f"{i:08d}.png")


@torch.no_grad()
def extract(net, images: torch.Tensor, batch_size: int = 64, progress: str = "") -> dict[str, torch.Tensor]:
    """Features of uint8 RGB images, one float32 CPU tensor per layer (zero rows for no images).
    `progress`: a label to show a progress bar under (a long quiet step on tens of thousands of images)."""
    device = next(net.parameters()).device
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in net.get_requested_features_list()}
    starts = range(0, len(images), batch_size)
    for i in tqdm(starts, desc=progress, unit="batch", disable=not progress, mininterval=5.0, leave=False):
        feats = net.convert_features_tuple_to_dict(net(images[i:i + batch_size].to(device)))
        for layer, value in feats.items():
            out[layer].append(value.cpu())
    return {layer: torch.cat(v) if v else torch.zeros(0, FEATURE_DIMS[layer]) for layer, v in out.items()}
