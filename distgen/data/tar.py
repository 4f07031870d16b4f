"""Reading one shard: URL -> raw WebDataset samples {"__key__", "__url__", "png": bytes, "cls": bytes, ...}.

Used by distgen.data's streams (`python -m pytest tests/test_stream.py` exercises it).

WebDataset opens the URL (local path, `pipe:` command, http, ...). The tar itself is parsed here
rather than by WebDataset's tarfile_to_samples, which uses Python's tarfile: that builds a TarInfo
per member and parses the PAX header TarWriter puts before each one in pure Python, about 0.4 ms a
member on a 2-core machine, the whole stream's bottleneck in benchmarks/loader.py. This reader does
only what shards hold (regular files, with PAX or GNU long names) at a few microseconds a member, and
it tells a file cut short from a complete one, which tarfile does not when the cut falls on a header.
Samples are grouped as WebDataset groups them: consecutive files sharing the name before the first dot.
A key that comes back after other samples (its label stored away from its image, as `tar` of an unsorted
folder can do) is a DataError naming the shard and key, never a silent half sample. Gzip-compressed
shards (`.tar.gz`, `.tgz`, or any shard starting with gzip's magic bytes) are decompressed on the fly.
A reader that starts inside a shard (split mode's deal, deal.py) seeks to its first sample by the byte
offsets index.json holds (`placed_members` finds them for the indexer and the writer's are the same).
"""
from __future__ import annotations

import gzip

import webdataset as wds

from distgen.data.decoding import Skips
from distgen.errors import DataError

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
    for name, data, _ in placed_members(stream):
        yield name, data


def placed_members(stream, at: int = 0):
    """(name, bytes, position) of each regular file, position being the byte offset (from `at`, where
    the stream starts) of the first header that belongs to it (a PAX or GNU long-name header, when it
    has one): where a reader can seek to start at this member. Errors as `members`."""
    path = size = None  # overrides from a PAX or GNU long-name header, for the next member only
    first = at  # the first header of the member being read
    while True:
        header = stream.read(BLOCK)
        if len(header) < BLOCK:
            raise EOFError("the file ends inside a header" if header else
                           "the file ends without the end-of-archive blocks: it was cut short")
        if header == ZERO:
            return
        stored = _number(header[148:156])
        if stored != sum(header) - sum(header[148:156]) + 256:  # the checksum counts its own field as spaces
            raise ValueError("a tar header with a wrong checksum: not a tar file, or a damaged one")
        kind = header[156:157]
        length = _number(header[124:136]) if size is None else size
        data = stream.read(length)
        stream.read(-length % BLOCK)
        if len(data) < length:
            raise EOFError("the file ends inside a member: it was cut short")
        at += BLOCK + length + (-length % BLOCK)
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
            yield name, data, first
        path = size = None
        first = at


GZIP_MAGIC = b"\x1f\x8b"


def open_shard(url: str):
    """The shard's tar bytes as a stream: WebDataset opens the URL, gzip is undone here."""
    stream = wds.gopen(url)
    gzipped = url.endswith((".gz", ".tgz"))
    if not gzipped and hasattr(stream, "peek"):  # local files: sniff the magic bytes, whatever the name
        gzipped = stream.peek(2)[:2] == GZIP_MAGIC
    return gzip.GzipFile(fileobj=stream, mode="rb") if gzipped else stream


def not_adjacent(url: str, key: str, ext: str) -> DataError:
    return DataError(f"shard '{url}': sample '{key}' has its '.{ext}' member apart from its other members "
                     f"(other samples lie between them); WebDataset reads a sample as consecutive files, so "
                     f"write the tar with its members sorted by name (`tar --sort=name -cf ...`) and rebuild "
                     f"the index (`python -m shards index ...`)")


def wrong_count(url: str, read: int, expected: int, more: bool = False) -> DataError:
    folder = url.rsplit("/", 1)[0] if "/" in url else "."
    holds = f"holds more than the {expected} samples index.json says" if more else \
        f"holds {read} samples but index.json says {expected}"
    return DataError(f"shard '{url}' {holds}; the index does not "
                     f"describe this shard (replaced or hand-written?), and training on it would skip or repeat "
                     f"samples. Remake the index with `python -m shards index {folder}`")


def wrong_offsets(url: str, position: int) -> DataError:
    folder = url.rsplit("/", 1)[0] if "/" in url else "."
    return DataError(f"shard '{url}': no sample starts at byte {position}, where index.json's 'offsets' say one "
                     f"does; the index does not describe this shard (replaced or rewritten?). Remake the index "
                     f"with `python -m shards index {folder}`")


def read_shard(url: str, skips: Skips, expected: int | None = None, start: int = 0, offsets=None):
    """Raw samples of one shard, in file order, from its sample `start` on. A truncated, garbled or
    unreadable shard ends where the damage starts (a sample it cut in two is dropped) and counts as one
    skip. A sample whose members are not adjacent is a DataError (see the module docstring), and so is a
    shard read to its end, undamaged, that holds other than `expected` samples (the index's count for
    it, when it has one).

    With `offsets` (the byte offset of each sample, from index.json) a local or gzip shard is entered
    at sample `start` by a seek; otherwise the samples before it are read and passed over undecoded."""
    try:
        stream = open_shard(url)
    except Exception as exc:  # gone since the check before training, or a remote error
        skips.skip(f"shard {url}", exc)
        return
    current, finished, counted = None, False, False
    done: set[str] = set()  # keys already handed on: one coming back is a sample split apart
    passed = base = at = 0  # samples before `start` passed over; samples before the seek; its byte offset
    try:
        if start and offsets is not None and len(offsets) > start and getattr(stream, "seekable", bool)():
            at = int(offsets[start])
            stream.seek(at)
            passed = base = start
        sought = at
        try:
            for name, data, position in placed_members(stream, at):
                sought = None
                key, ext = wds.tariterators.base_plus_ext(name)
                if key is None or key.rsplit("/", 1)[-1].startswith("__"):  # no extension, or WebDataset metadata
                    continue
                if current is not None and key != current["__key__"]:
                    done.add(current["__key__"])
                    if passed < start:
                        passed += 1
                    else:
                        skips.seen += 1
                        yield current
                    current = None
                if current is None:
                    if key in done:
                        raise not_adjacent(url, key, ext.lower())
                    if expected is not None and base + len(done) >= expected:  # a sample beyond the index's count
                        raise wrong_count(url, base + len(done) + 1, expected, more=True)
                    current = {"__key__": key, "__url__": url}
                current[ext.lower()] = data
        except ValueError:
            if sought is not None and sought > 0:  # the first header after the seek is not one
                raise wrong_offsets(url, sought) from None
            raise
        if current is not None:
            done.add(current["__key__"])
            if passed >= start:
                skips.seen += 1
                yield current
        finished = True
        total = base + len(done)
        if expected is not None and total != expected:
            raise wrong_count(url, total, expected)
    except DataError:
        raise
    except (OSError, EOFError, ValueError) as exc:  # gzip's BadGzipFile is an OSError
        finished = counted = True
        skips.skip(f"the rest of shard {url}", exc)
    finally:
        try:
            stream.close()  # a pipe: command is waited for here and its exit status checked
        except Exception as exc:
            if finished and not counted:  # read to the end, yet its command failed (stopped early: no matter)
                skips.skip(f"shard {url}: its command failed", exc)
