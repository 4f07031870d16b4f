"""Writes one dataset's splits as WebDataset tar shards plus index.json, never leaving half a shard.

Each shard is written under a temporary name and renamed when complete; index.json is written
last, also via rename, so a folder with an index.json is always a complete shard set. The index
gives each shard's sample count and the byte offset of each sample (`offsets`), where a reader that
starts inside the shard seeks to (docs/data.md, "Readers"). The output
folder is created only when the first sample arrives, so a converter that rejects its input
before writing leaves nothing behind.

Encodings (`--encoding`): `raw` stores each image as its uint8 pixels in a `.npy` member (NumPy's file
format: a 128-byte header, then H x W x C bytes; lossless and decode-free: the stream reads it about
100x faster than a PNG, and `wds.WebDataset(url).decode()` reads it as an ndarray); `png` stores PNG
(lossless). Either way images larger than PNG_MAX_SIDE are JPEG, unless `raw` is asked for by name.
The default, `auto`, is raw up to PNG_MAX_SIDE and JPEG above: chosen by measurement
(docs/benchmarks.md, "Decode-free samples").
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

PNG_MAX_SIDE = 64  # images up to this side are stored losslessly (raw or PNG), larger ones as JPEG
ENCODINGS = ("auto", "raw", "png")


def npy_bytes(image: Image.Image) -> bytes:
    """The pixels as a .npy file: H x W (grey) or H x W x 3 uint8."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(image, dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def jpg_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


ENCODERS = {"npy": npy_bytes, "png": png_bytes, "jpg": jpg_bytes}


def encode(image: Image.Image, encoding: str = "auto") -> tuple[str, bytes]:
    """(member extension, bytes) of one image under an --encoding."""
    small = max(image.size) <= PNG_MAX_SIDE
    fmt = "npy" if encoding == "raw" or (encoding == "auto" and small) else "png" if small else "jpg"
    return fmt, ENCODERS[fmt](image)


class ShardSetWriter:
    """`add(split, key, image, cls=None, meta=None)` for every sample, then `finish(**index_fields)`.

    A dataset with several domains (maps: A and B) writes each into `part(name)`, a complete shard
    set of its own in OUT/name; `finish` and `abort` then act on every part.
    """

    def __init__(self, out: str | Path, samples_per_shard: int = 2000, encoding: str = "auto", workers: int = 1):
        self.out = Path(out)
        self.samples_per_shard = samples_per_shard
        self.encoding, self.workers = encoding, workers  # read by shards.common.write_items
        self.splits: dict[str, dict] = {}
        self.skipped: list[str] = []
        self.parts: dict[str, ShardSetWriter] = {}
        self._open: dict[str, tuple[wds.TarWriter, Path, Path]] = {}
        self._started = False

    def part(self, name: str) -> ShardSetWriter:
        assert not self.splits, "a writer holds either samples or parts, not both"
        return self.parts.setdefault(name, ShardSetWriter(self.out / name, self.samples_per_shard, self.encoding,
                                                          self.workers))

    def add(self, split: str, key: str, image: Image.Image, cls: int | None = None,
            meta: dict | None = None, fmt: str | None = None) -> None:
        """`fmt` "npy", "png" or "jpg"; by default as the writer's encoding says (see `encode`)."""
        ext, data = (fmt, ENCODERS[fmt](image)) if fmt else encode(image, self.encoding)
        self.add_encoded(split, key, ext, data, cls, meta)

    def add_encoded(self, split: str, key: str, ext: str, data: bytes, cls: int | None = None,
                    meta: dict | None = None) -> None:
        """One sample whose image is already encoded as `ext` (npy, png, jpg)."""
        assert "." not in key, f"sample keys contain no dots: {key}"
        assert not self.parts, "a writer holds either samples or parts, not both"
        info = self.splits.setdefault(split, {"shards": [], "count": 0, "counts": [], "offsets": []})
        if split not in self._open or info["count"] % self.samples_per_shard == 0:
            self._close(split)
            if not self._started:
                self._start()
            name = f"{split}-{len(info['shards']):06d}.tar"
            final, tmp = self.out / name, self.out / f".{name}.partial"
            self._open[split] = (wds.TarWriter(str(tmp)), tmp, final)
            info["shards"].append(name)
            info["counts"].append(0)
            info["offsets"].append([])
        sample = {"__key__": key, ext: data, "json": meta or {}}
        if cls is not None:
            sample["cls"] = int(cls)
        writer = self._open[split][0]
        info["offsets"][-1].append(writer.tarstream.offset)  # where this sample's first header goes: readers seek here
        writer.write(sample)
        info["count"] += 1
        info["counts"][-1] += 1

    def skip(self, name: str) -> None:
        self.skipped.append(name)

    def _start(self) -> None:
        """First shard of this run: an index.json left by an earlier run would describe shards that
        are about to be replaced, so it goes until this run finishes."""
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "index.json").unlink(missing_ok=True)
        self._started = True

    def _close(self, split: str) -> None:
        if split in self._open:
            writer, tmp, final = self._open.pop(split)
            writer.close()
            os.replace(tmp, final)

    def abort(self) -> None:
        """Remove the shard being written; complete shards stay, but no index.json is written."""
        for part in self.parts.values():
            part.abort()
        for writer, tmp, _ in self._open.values():
            writer.close()
            tmp.unlink(missing_ok=True)
        self._open.clear()

    def finish(self, **index_fields) -> dict:
        """Write index.json (one per part) and return it; with parts, a summary keyed `part/split`."""
        if self.parts:
            indexes = {name: part.finish(**index_fields, domain=name) for name, part in self.parts.items()}
            skipped = [f"{name}/{f}" for name, index in indexes.items() for f in index["skipped"]["files"]]
            return {"splits": {f"{name}/{split}": entry for name, index in indexes.items()
                               for split, entry in index["splits"].items()},
                    "skipped": {"count": len(skipped), "files": skipped}}
        for split in list(self._open):
            self._close(split)
        index = {**index_fields, "splits": self.splits,
                 "skipped": {"count": len(self.skipped), "files": self.skipped}}
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / ".index.json.partial"
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, self.out / "index.json")
        return index
