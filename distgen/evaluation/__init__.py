"""Evaluation and reporting: torch-fidelity metrics on any number of ranks, run-dir results, figures.

    python launch/evaluate.py RUN_DIR --metrics fid,isc,kid,prc --inception-weights PATH
    python launch/report.py RUN_DIR
    python launch/compare.py RUN_DIR RUN_DIR ...

Plain PyTorch and torch-fidelity; callers supply rank, world size and a `gather` callable
(launch/evaluate.py passes Accelerate's). Import from the modules, so that reading results does
not pay for importing torch and torch-fidelity:
  fidelity        evaluate_generator(): generate in slices, extract, gather, metrics on rank 0
  inception       torch-fidelity's InceptionV3 from a local weights file; uint8 / RGB images
  reference       real-split features, cached on disk keyed by content
  ranks           slices per rank; gathered rows back in global order
  random_weights  a random, BatchNorm-calibrated weights file for offline tests and benchmarks
  runs            reading a run dir: config, metrics.jsonl history, eval/*.json
  plots           matplotlib (Agg) learning-curve and image-strip figures
"""
