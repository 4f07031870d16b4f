"""Evaluation of generators that matches torch-fidelity: FID, IS, KID, precision/recall, on any number of ranks.

    python launch/evaluate.py RUN_DIR --metrics fid,isc,kid,prc --inception-weights PATH
    accelerate launch launch/evaluate.py RUN_DIR --metrics fid --inception-weights PATH

Plain PyTorch and torch-fidelity; the caller supplies rank, world size and a `gather` callable
(launch/evaluate.py and the training loops pass Accelerate's). Modules:
  fidelity    evaluate_generator(): generate in slices, extract, gather, compute on rank 0
  inception   torch-fidelity's InceptionV3 from a local weights file; uint8 / RGB conversion
  reference   real-split features, cached on disk keyed by content
  ranks       slices per rank and putting gathered rows back in order
  random_weights  a random, BatchNorm-calibrated weights file for offline tests and benchmarks
"""
from distgen.evaluation.fidelity import FIDELITY_METRICS, evaluate_generator
from distgen.evaluation.inception import WEIGHTS_ENV, resolve_weights

__all__ = ["FIDELITY_METRICS", "WEIGHTS_ENV", "evaluate_generator", "resolve_weights"]
