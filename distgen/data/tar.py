"""Reading one shard: URL -> raw WebDataset samples {"__key__", "__url__", "png": bytes, "cls": bytes, ...}.

Used by distgen.data's streams (`python -m pytest tests/test_stream.py` exercises it).

WebDataset opens the URL (local path, `pipe:` command, http, ...). The tar itself is parsed here
rather than by WebDataset's tarfile_to_samples, which uses Python's tarfile: that builds a TarInfo
per member and parses the PAX header TarWriter puts before each one in pure Python, about 0.4 ms a
member on a 2-core machine, the whole stream's bottleneck in benchmarks/loader.py. This reader does
only what shards hold (regular files, with PAX or GNU long names) at a few microseconds a member, and
it tells a file cut short from a complete one, which tarfile does not when the cut falls on a header.
Samples are grouped as WebDataset groups them: consecutive files sharing the name before the first dot.
"""
from __future__ import annotations

import webdataset as wds

from distgen.data.samples import Skips

BLOCK = 512
ZERO = bytes(BLOCK)


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    return int(field.rstrip(b"\0 ") or b"0", 8)


def _pax(data: bytes) -> dict[str, str]:
    """PAX records: "LEN key=value\\n" ..."""
    out, i = {}, 0
    while i < len(data) and data[i:i + 1] != b"\0":
        length = int(data[i:data.index(b" ", i)])
        key, _, value = data[data.index(b" ", i) + 1:i + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "replace")
        i += length
    return out


def members(stream):
    """(name, bytes) of each regular file; EOFError if the stream is cut short, ValueError if garbled."""
    path = size = None  # overrides from a PAX or GNU long-name header, for the next member only
    while True:
        header = stream.read(BLOCK)
        if len(header) < BLOCK:
            raise EOFError("the file ends inside a header" if header else
                           "the file ends without the end-of-archive blocks: it was cut short")
        if header == ZERO:
            return
        stored = _number(header[148:156])
        if stored != sum(header[:148]) + 256 + sum(header[156:]):  # the checksum counts its field as spaces
            raise ValueError("a tar header with a wrong checksum: not a tar file, or a damaged one")
        kind = header[156:157]
        length = _number(header[124:136]) if size is None else size
        data = stream.read(length)
        stream.read(-length % BLOCK)
        if len(data) < length:
            raise EOFError("the file ends inside a member: it was cut short")
        if kind == b"x":
            pax = _pax(data)
            path, size = pax.get("path"), int(pax["size"]) if "size" in pax else None
            continue
        if kind == b"L":
            path, size = data.rstrip(b"\0").decode("utf-8", "replace"), None
            continue
        if kind in (b"0", b"\0", b"7"):
            name = path
            if name is None:
                name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
                prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
                name = f"{prefix.decode('utf-8', 'replace')}/{name}" if prefix else name
            yield name, data
        path = size = None


def read_shard(url: str, skips: Skips):
    """Raw samples of one shard, in file order. A truncated, garbled or unreadable shard ends where the
    damage starts (a sample it cut in two is dropped) and counts as one skip."""
    try:
        stream = wds.gopen(url)
    except Exception as exc:  # gone since the check before training, or a remote error
        skips.skip(f"shard {url}", exc)
        return
    current, finished, counted = None, False, False
    try:
        for name, data in members(stream):
            key, ext = wds.tariterators.base_plus_ext(name)
            if key is None or key.rsplit("/", 1)[-1].startswith("__"):  # no extension, or WebDataset metadata
                continue
            if current is not None and key != current["__key__"]:
                skips.seen += 1
                yield current
                current = None
            if current is None:
                current = {"__key__": key, "__url__": url}
            current[ext.lower()] = data
        if current is not None:
            skips.seen += 1
            yield current
        finished = True
    except (OSError, EOFError, ValueError) as exc:
        finished = counted = True
        skips.skip(f"the rest of shard {url}", exc)
    finally:
        try:
            stream.close()  # a pipe: command is waited for here and its exit status checked
        except Exception as exc:
            if finished and not counted:  # read to the end, yet its command failed (stopped early: no matter)
                skips.skip(f"shard {url}: its command failed", exc)
