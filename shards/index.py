"""`index`: index.json for WebDataset shards made by any tool (webdataset.ShardWriter, img2dataset, tar).

    python -m shards index SRC [--out DIR/index.json] [--split NAME=PATTERN ...] [--workers N]

SRC is a folder (its `*.tar`, `*.tar.gz`, `*.tgz`), a glob (`'/data/shards/*.tar'`) or a brace pattern
(`'/data/shards/train-{000000..000127}.tar'`). Every shard is read once, in parallel (`--workers`,
default all cores), its samples grouped as WebDataset groups them (consecutive files sharing the name
before the first dot). Each sample needs an image (png, jpg/jpeg, webp, or a decode-free npy); where
the shard set has labels (`.cls`) or attributes (`.json` with an `attrs` object), every sample needs
them. Splits come from the file names: `train-*`, `test-*`, `val-*` (also `_` or `.` after the word),
or `--split NAME=PATTERN` (a glob on the file name, tried first, in order); shards that match nothing,
like img2dataset's `00000.tar`, form the train split. Image size and channels are read from the image
headers (no full decode), classes from the labels (0..max), attributes from the first sample's `attrs`;
each shard's sample count and the byte offset of each sample (readers seek there: docs/data.md).

Problems are reported one per line, naming the shard and the sample key: samples without an image,
labels or attributes missing, a sample's members apart (other samples between them), unreadable
shards; any of these stops before index.json is written (exit code 2). Mixed image sizes are reported
too, but the index is written (the stream resizes each image; data.cache needs one size).
The format of index.json: docs/data.md.
"""
from __future__ import annotations

import collections
import fnmatch
import glob
import io
import json
import os
import re
import sys
from multiprocessing import Pool
from pathlib import Path

import webdataset as wds
from PIL import Image

from distgen.data.decoding import IMAGE_KEYS, npy_image
from distgen.data.tar import open_shard, placed_members
from distgen.errors import DataError
from shards.common import progress

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
CONVENTION = re.compile(r"^(train|test|val)(?:[-_.]|$)")
SHOW_PROBLEMS = 20  # problem lines printed; the count says how many there were
CHANNELS = {"1": 1, "L": 1, "LA": 1, "I": 1, "I;16": 1, "F": 1}  # PIL modes read as grey; the rest as RGB


def add_arguments(parser) -> None:
    parser.add_argument("src", help="a shard folder, a glob or a brace pattern of .tar / .tar.gz shards")
    parser.add_argument("--out", default=None, help="index.json to write (default: index.json in the shards' folder)")
    parser.add_argument("--split", action="append", default=[], metavar="NAME=PATTERN",
                        help="shards whose file name matches the glob PATTERN form split NAME (repeatable)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="shards read at once (default: all cores)")


def shard_urls(src: str) -> list[str]:
    """The shard files SRC names; a DataError when it names none."""
    if Path(src).is_dir():
        urls = sorted(str(p) for p in Path(src).iterdir() if p.name.endswith(SHARD_SUFFIXES) and p.is_file())
        if not urls:
            raise DataError(f"folder '{src}' holds no shards ({', '.join('*' + s for s in SHARD_SUFFIXES)})")
        return urls
    urls = []
    for url in wds.shardlists.expand_urls(src):
        matches = sorted(glob.glob(url)) if any(c in url for c in "*?[") else [url]
        if not matches or not all(Path(m).is_file() for m in matches):
            raise DataError(f"'{url}' names no shard files; give a folder, a glob or a brace pattern of local shards")
        urls += matches
    return urls


def split_of(name: str, rules: list[tuple[str, str]]) -> str:
    for split, pattern in rules:
        if fnmatch.fnmatch(name, pattern):
            return split
    found = CONVENTION.match(name)
    return found.group(1) if found else "train"


def image_shape(ext: str, data: bytes) -> tuple[int, int, int]:
    """(height, width, channels) from the header alone."""
    if ext == "npy":
        h, w, c = npy_image(data).shape
        return h, w, 1 if c == 1 else 3
    with Image.open(io.BytesIO(data)) as image:
        return image.size[1], image.size[0], CHANNELS.get(image.mode, 3)


def read_one(url: str) -> dict:
    """Everything the index needs from one shard, and its problems as (key, what) pairs."""
    out = {"url": url, "count": 0, "shapes": collections.Counter(), "shape_key": {}, "labels": set(),
           "attrs": None, "offsets": [], "with_cls": 0, "with_attrs": 0, "problems": [], "no_cls": [], "no_attrs": []}
    done, current = set(), None

    def finish(sample):
        key = sample["__key__"]
        out["count"] += 1
        image = next((k for k in IMAGE_KEYS if k in sample), None)
        if image is None:
            out["problems"].append((key, f"no image ({'/'.join(IMAGE_KEYS)}) among its members "
                                         f"{', '.join(sorted(k for k in sample if k[0] != '_'))}"))
        else:
            try:
                shape = image_shape(image, sample[image])
                out["shapes"][shape] += 1
                out["shape_key"].setdefault(shape, key)
            except Exception as exc:  # a header PIL cannot read
                out["problems"].append((key, f"its .{image} cannot be read ({type(exc).__name__}: {exc})"))
        if "cls" in sample:
            try:
                out["labels"].add(int(sample["cls"]))
                out["with_cls"] += 1
            except ValueError:
                out["problems"].append((key, f".cls is {sample['cls'][:20]!r}, not an integer class"))
        else:
            out["no_cls"].append(key)
        attrs = None
        if "json" in sample:
            try:
                attrs = json.loads(sample["json"]).get("attrs")
            except (ValueError, AttributeError):
                attrs = None
        if isinstance(attrs, dict) and attrs:
            out["with_attrs"] += 1
            out["attrs"] = out["attrs"] or list(attrs)
        else:
            out["no_attrs"].append(key)

    try:
        stream = open_shard(url)
        try:
            for name, data, position in placed_members(stream):
                key, ext = wds.tariterators.base_plus_ext(name)
                if key is None or key.rsplit("/", 1)[-1].startswith("__"):
                    continue
                if current is not None and key != current["__key__"]:
                    done.add(current["__key__"])
                    finish(current)
                    current = None
                if current is None:
                    if key in done:
                        out["problems"].append((key, f"its .{ext.lower()} lies apart from its other members "
                                                     f"(other samples between them); write the tar with "
                                                     f"`tar --sort=name`"))
                    current = {"__key__": key}
                    out["offsets"].append(position)  # where a reader seeks to start at this sample
                current[ext.lower()] = data
            if current is not None:
                finish(current)
        finally:
            stream.close()
    except (OSError, EOFError, ValueError) as exc:
        out["problems"].append(("", f"unreadable after {out['count']} samples ({type(exc).__name__}: {exc})"))
    return out


def build(urls: list[str], out_path: Path, rules: list[tuple[str, str]], workers: int) -> tuple[dict, list, list]:
    """(index, problems, warnings); problems and warnings are lines naming shard and key."""
    workers = max(1, min(workers, len(urls)))
    if workers > 1:
        with Pool(workers) as pool:
            shards = list(progress(pool.imap(read_one, urls), "index", total=len(urls), unit="shard"))
    else:
        shards = [read_one(u) for u in progress(urls, "index", unit="shard")]
    problems = [f"{s['url']}: sample '{key}': {what}" if key else f"{s['url']}: {what}"
                for s in shards for key, what in s["problems"]]
    labelled = sum(s["with_cls"] for s in shards)
    with_attrs = sum(s["with_attrs"] for s in shards)
    for s in shards:
        if labelled:
            problems += [f"{s['url']}: sample '{k}': no label (.cls), though {labelled} other samples have one"
                         for k in s["no_cls"]]
        if with_attrs:
            problems += [f"{s['url']}: sample '{k}': no attributes (.json attrs), though {with_attrs} other "
                         f"samples have them" for k in s["no_attrs"]]
    shapes = collections.Counter()
    for s in shards:
        shapes.update(s["shapes"])
    warnings = []
    if not shapes:
        raise DataError(f"no readable image in {len(urls)} shard(s) ({urls[0]} ...)")
    (h, w, c), _ = shapes.most_common(1)[0]
    sizes = {(sh[0], sh[1]) for sh in shapes}
    if len(sizes) > 1:
        for s in shards:
            for shape, key in s["shape_key"].items():
                if shape[:2] != (h, w):
                    warnings.append(f"{s['url']}: sample '{key}' is {shape[0]}x{shape[1]} "
                                    f"({s['shapes'][shape]} such in this shard), most are {h}x{w}")
    if h != w:
        warnings.append(f"images are {h}x{w}, not square: the stream resizes them to squares; set data.crop={min(h, w)} "
                        f"to crop the centre square first")
    channels = 3 if any(sh[2] == 3 for sh in shapes) else 1
    labels = set().union(*(s["labels"] for s in shards))
    base = out_path.parent
    splits: dict[str, dict] = {}
    for s in shards:
        name = os.path.relpath(s["url"], base)
        entry = splits.setdefault(split_of(Path(s["url"]).name, rules),
                                  {"shards": [], "count": 0, "counts": [], "offsets": []})
        entry["shards"].append(name)
        entry["counts"].append(s["count"])
        entry["offsets"].append(s["offsets"])
        entry["count"] += s["count"]
    attr_names = next((s["attrs"] for s in shards if s["attrs"]), None) or []
    index = {"format": "index", "image_size": min(h, w), "channels": channels,
             "class_names": [str(i) for i in range(max(labels) + 1)] if labels else [],
             "attr_names": attr_names, "splits": splits, "skipped": {"count": 0, "files": []}}
    return index, problems, warnings


def main(args) -> int:
    rules = []
    for rule in args.split:
        name, sep, pattern = rule.partition("=")
        if not sep or not name or not pattern:
            raise DataError(f"--split '{rule}': expected NAME=PATTERN, e.g. --split val='valid-*.tar'")
        rules.append((name, pattern))
    urls = shard_urls(args.src)
    out = Path(args.out) if args.out else (Path(args.src) if Path(args.src).is_dir() else
                                           Path(os.path.commonpath([str(Path(u).parent) for u in urls])))
    out = out / "index.json" if out.suffix != ".json" else out
    index, problems, warnings = build(urls, out, rules, args.workers)
    for line in warnings[:SHOW_PROBLEMS]:
        print(f"warning: {line}", file=sys.stderr)
    if problems:
        for line in problems[:SHOW_PROBLEMS]:
            print(f"error: {line}", file=sys.stderr)
        more = f" (first {SHOW_PROBLEMS} shown)" if len(problems) > SHOW_PROBLEMS else ""
        print(f"error: {len(problems)} problem(s){more} in {len(urls)} shard(s); fix the shards and run "
              f"`python -m shards index` again; no index written", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out)
    counts = ", ".join(f"{s}={v['count']}" for s, v in index["splits"].items())
    print(f"indexed {sum(v['count'] for v in index['splits'].values())} samples ({counts}) in {len(urls)} "
          f"shard(s): {index['image_size']} px, {index['channels']} channel(s), {len(index['class_names'])} "
          f"classes, {len(index['attr_names'])} attributes; wrote {out}")
    return 0
