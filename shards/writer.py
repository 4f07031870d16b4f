"""Writes one dataset's splits as WebDataset tar shards plus index.json, never leaving half a shard.

Each shard is written under a temporary name and renamed when complete; index.json is written
last, also via rename, so a folder with an index.json is always a complete shard set.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import webdataset as wds
from PIL import Image


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class ShardSetWriter:
    """`add(split, key, image, cls=None, meta=None)` for every sample, then `finish(**index_fields)`."""

    def __init__(self, out: str | Path, samples_per_shard: int = 2000):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.samples_per_shard = samples_per_shard
        self.splits: dict[str, dict] = {}
        self.skipped: list[str] = []
        self._open: dict[str, tuple[wds.TarWriter, Path, Path]] = {}

    def add(self, split: str, key: str, image: Image.Image, cls: int | None = None,
            meta: dict | None = None) -> None:
        assert "." not in key, f"sample keys contain no dots: {key}"
        info = self.splits.setdefault(split, {"shards": [], "count": 0})
        if split not in self._open or info["count"] % self.samples_per_shard == 0:
            self._close(split)
            name = f"{split}-{len(info['shards']):06d}.tar"
            final, tmp = self.out / name, self.out / f".{name}.partial"
            self._open[split] = (wds.TarWriter(str(tmp)), tmp, final)
            info["shards"].append(name)
        sample = {"__key__": key, "png": png_bytes(image), "json": meta or {}}
        if cls is not None:
            sample["cls"] = int(cls)
        self._open[split][0].write(sample)
        info["count"] += 1

    def skip(self, name: str) -> None:
        self.skipped.append(name)

    def _close(self, split: str) -> None:
        if split in self._open:
            writer, tmp, final = self._open.pop(split)
            writer.close()
            os.replace(tmp, final)

    def abort(self) -> None:
        """Remove the shard being written; complete shards stay, but no index.json is written."""
        for writer, tmp, _ in self._open.values():
            writer.close()
            tmp.unlink(missing_ok=True)
        self._open.clear()

    def finish(self, **index_fields) -> dict:
        for split in list(self._open):
            self._close(split)
        index = {**index_fields, "splits": self.splits,
                 "skipped": {"count": len(self.skipped), "files": self.skipped}}
        tmp = self.out / ".index.json.partial"
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, self.out / "index.json")
        return index
