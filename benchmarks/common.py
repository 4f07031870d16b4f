"""Helpers shared by the benchmark scripts: the embedded digits shards and one-JSON-line output."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def digits_shards() -> Path:
    """The embedded digits shards, built with the real converter if missing: $DISTGEN_DIGITS when set
    (the tests point it at a temporary folder, so they leave nothing in the checkout), else data/digits
    (the folder `make demo` builds)."""
    out = Path(os.environ.get("DISTGEN_DIGITS") or ROOT / "data" / "digits")
    if not (out / "index.json").is_file():
        sys.path.insert(0, str(ROOT))
        from shards.__main__ import main

        main(["digits", "--out", str(out)])
    return out


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {gpu}"


def finish(name: str, ratio: float, **fields) -> None:
    """One JSON line; ratio None where nothing could be measured."""
    print(json.dumps({"benchmark": name, "ratio": None if ratio is None else round(ratio, 4), **fields,
                      "machine": machine()}))
