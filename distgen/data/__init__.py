"""Shard streams: WebDataset tar shards -> batch dicts {"image": uint8 NCHW, "label": long, ...}; to_device
makes the image [-1, 1] float on the training device.

Used by the loops; a shard folder is made with `python -m shards digits --out data/digits`, and a
recipe points at it with `data.root` (a folder or a URL pattern: braces, globs, `pipe:`).

- `load_info(cfg.data)` reads index.json (image size, channels, class names, splits); index.py.
- `train_loader(...)` is an infinite, seeded stream of full batches for one rank, in `split` or
  `resampled` mode, with the recipe's transforms; it resumes at any batch count; stream.py.
- `to_device(batch, device)`: the batch on the training device, its uint8 image scaled there; device.py.
- `eval_batches(...)` (float images) walks a split exactly once across all ranks (sample j goes to rank j % world).
- Decoding, transforms and the count of skipped bad input: decoding.py.
"""
from distgen.data.device import to_device
from distgen.data.index import DataInfo, load_info, split_urls
from distgen.data.stream import TrainStream, eval_batches, train_loader

__all__ = ["DataInfo", "TrainStream", "eval_batches", "load_info", "split_urls", "to_device", "train_loader"]
