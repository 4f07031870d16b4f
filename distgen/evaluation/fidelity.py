"""FID, IS, KID and precision/recall of a generator, computed in slices across ranks.

    python launch/evaluate.py RUN_DIR --metrics fid,isc,kid,prc --inception-weights PATH
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 launch/evaluate.py RUN_DIR --metrics fid ...

Each rank generates its block of the `num_samples` images and extracts their features with
torch-fidelity's own InceptionV3; `gather` brings all features to every rank in sample order;
rank 0 computes the metrics with torch-fidelity's own functions and settings. The numbers equal
`torch_fidelity.calculate_metrics(input1=SAMPLES_DIR, input2=REFERENCE_DIR,
feature_extractor="inception-v3-compat", kid_subset_size=..., ...)` on the PNGs written with
save_samples / save_reference, for any number of ranks.

Precision/recall use the InceptionV3 pool features (torch-fidelity's layer for `prc` on this
extractor); torch-fidelity's default for `prc` alone would be VGG16, a second weights file.
"""
from __future__ import annotations

from pathlib import Path

import torch
from threadpoolctl import threadpool_limits
from torch_fidelity.defaults import DEFAULTS
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_featuresdict_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_featuresdict_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_featuresdict_to_metric
from torch_fidelity.metric_prc import (KEY_METRIC_F_SCORE, KEY_METRIC_PRECISION, KEY_METRIC_RECALL,
                                       prc_featuresdict_to_metric)

from distgen.data import load_info
from distgen.errors import ConfigError
from distgen.evaluation.inception import (as_rgb, extract, layer_for, load_extractor, resolve_weights, save_pngs,
                                          to_uint8)
from distgen.evaluation.ranks import Gather, gather_rows, identity, my_slice
from distgen.evaluation.reference import reference_features
from distgen.generation import generate_range

FIDELITY_METRICS = ("fid", "isc", "kid", "prc")
KEYS = {KEY_METRIC_FID: "fid", KEY_METRIC_ISC_MEAN: "isc_mean", KEY_METRIC_ISC_STD: "isc_std",
        KEY_METRIC_KID_MEAN: "kid_mean", KEY_METRIC_KID_STD: "kid_std", KEY_METRIC_PRECISION: "precision",
        KEY_METRIC_RECALL: "recall", KEY_METRIC_F_SCORE: "f_score"}


def sample_inputs(family, n: int, seed: int) -> dict:
    """The generator inputs of sample 0..n-1: the same on every rank and for every world size
    (the family's `eval_inputs`: class-conditioned families cycle through their classes, others take
    noise; distgen/families/base.py)."""
    return family.eval_inputs(n, seed)


def generate_slice(family, G, inputs: dict, start: int, stop: int) -> torch.Tensor:
    """Images start..stop-1 as uint8, by distgen.generation's rules: on a copy with plain BatchNorm and
    batch statistics, in fixed chunks, no collective; so image k is the same for any world size."""
    try:
        images = generate_range(family, G, inputs, start, stop)
    except KeyError as exc:  # e.g. attribute-conditioned or image-to-image generators
        raise ConfigError(f"family '{family.cfg.family}' needs input {exc} to generate; FID/IS/KID/PRC "
                          f"sample noise or classes only (a family can define eval_inputs(n, seed))") from None
    if not len(images):
        size = family.image_size
        return torch.zeros(0, family.info.channels, size, size, dtype=torch.uint8)
    return to_uint8(images)


def torch_fidelity_metrics(metrics, generated: dict, reference: dict | None, kid_subset_size: int,
                           device: torch.device | str = "cpu") -> dict:
    """torch-fidelity's own metric functions on features, with calculate_metrics' default settings.
    PRC's pairwise distances (torch.cdist, N x N) run on `device` (as calculate_metrics puts them on the
    GPU): on a CPU they take hours at 50,000 samples. FID and KID are numpy in torch-fidelity."""
    # FID's 2048x2048 eigendecomposition (numpy, OpenBLAS) took 3.3 CPU-s on one thread against
    # 19.9 CPU-s (and 5x the wall time) on two threads of a busy 2-core machine: LAPACK's eig gains
    # little from threads and loses much to their spinning. Same function, same value.
    with threadpool_limits(limits=1, user_api="blas"):
        return _metrics(metrics, generated, reference, kid_subset_size, device)


def _metrics(metrics, generated: dict, reference: dict | None, kid_subset_size: int, device) -> dict:
    kwargs = {**DEFAULTS, "verbose": False, "kid_subset_size": kid_subset_size}
    out = {}
    if "isc" in metrics:
        out.update(isc_featuresdict_to_metric(generated, layer_for("isc"), **kwargs))
    if "fid" in metrics:
        layer = layer_for("fid")
        out.update(fid_statistics_to_metric(fid_featuresdict_to_statistics(generated, layer),
                                            fid_featuresdict_to_statistics(reference, layer), False))
    if "kid" in metrics:
        out.update(kid_featuresdict_to_metric(generated, reference, layer_for("kid"), **kwargs))
    if "prc" in metrics:
        layer = layer_for("prc")
        out.update(prc_featuresdict_to_metric({layer: generated[layer].to(device)}, {layer: reference[layer].to(device)},
                                              layer, **kwargs))
    return {KEYS[k]: float(v) for k, v in out.items() if k in KEYS}


def _on_device(gather: Gather, device) -> Gather:
    return lambda tensor: gather(tensor.to(device)).cpu()


def evaluate_generator(family, cfg, metrics, num_samples: int, weights: str | Path | None = None, *,
                       generator: torch.nn.Module | None = None, rank: int = 0, world_size: int = 1,
                       gather: Gather = identity, device: torch.device | str = "cpu", seed: int = 1234,
                       batch_size: int = 64, kid_subset_size: int = 1000, cache_dir: str | Path | None = None,
                       save_samples: str | Path | None = None, save_reference: str | Path | None = None,
                       log=None) -> dict:
    """Flat results {"fid", "isc_mean", ..., "num_samples", "num_reference"} on rank 0, {} elsewhere.

    Every rank must call it with the same arguments. `generator`: the plain (unwrapped) generator
    or its EMA copy; default the family's own. `weights`: an InceptionV3 weights file (default
    $DISTGEN_INCEPTION_WEIGHTS). `cache_dir`: where reference features are cached (None: not cached).
    `kid_subset_size` is lowered to the smaller image count when there are fewer images."""
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        return {}
    unknown = [m for m in metrics if m not in FIDELITY_METRICS]
    if unknown:
        raise ConfigError(f"unknown image metric '{unknown[0]}'; valid: {', '.join(FIDELITY_METRICS)}")
    weights = resolve_weights(weights)
    if family.GENERATOR is None:
        raise ConfigError(f"metrics {', '.join(metrics)} score generated images; family '{cfg.family}' "
                          f"generates none")
    if num_samples < 2:
        raise ConfigError(f"--num-samples {num_samples}: FID/IS/KID/PRC need at least 2 images")
    layers = sorted({layer_for(m) for m in metrics})
    net = load_extractor(weights, layers, device)
    if world_size > 1:  # NCCL gathers device tensors only: send them from `device`, keep results on the CPU
        gather = _on_device(gather, device)

    G = generator if generator is not None else family.nets[family.GENERATOR]
    start, stop = my_slice(num_samples, rank, world_size)
    images = generate_slice(family, G, sample_inputs(family, num_samples, seed), start, stop)
    if save_samples:
        Path(save_samples).mkdir(parents=True, exist_ok=True)
        save_pngs(images, range(start, stop), Path(save_samples))
    local = extract(net, as_rgb(images), batch_size, progress="generated features" if rank == 0 else "")
    generated = {layer: gather_rows(value, gather, world_size) for layer, value in local.items()}

    reference = None
    if set(metrics) - {"isc"}:
        ref_layers = sorted({layer_for(m) for m in metrics if m != "isc"})
        reference = reference_features(net, ref_layers, cfg.data, load_info(cfg.data), family.image_size,
                                       weights, batch_size=batch_size, rank=rank, world_size=world_size,
                                       gather=gather, cache_dir=cache_dir, save_dir=save_reference, log=log)
    if rank != 0:
        return {}
    n_ref = len(next(iter(reference.values()))) if reference else 0
    if reference is not None and n_ref < 2:
        raise ConfigError(f"data.eval_split '{cfg.data.eval_split}' has {n_ref} images; FID/KID/PRC need 2 or more")
    subset = min(kid_subset_size, num_samples, n_ref) if "kid" in metrics else kid_subset_size
    out = torch_fidelity_metrics(metrics, generated, reference, subset, device)
    out.update({"num_samples": num_samples, **({"num_reference": n_ref} if reference else {}),
                **({"kid_subset_size": subset} if "kid" in metrics else {})})
    return out
