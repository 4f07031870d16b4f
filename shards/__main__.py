"""Command line of the converters.

    python -m shards FORMAT --src RAW_DIR --out OUT_DIR [--size PX] [--split ...] [--samples-per-shard N]
        [--encoding auto|raw|png] [--workers N]
    python -m shards folder --src MY_IMAGES --out OUT_DIR [--size PX] [--test-fraction F]  # your own images
    python -m shards index SRC [--out DIR/index.json] [--split NAME=PATTERN ...]   # shards from other tools

FORMAT is one of celeba, faces, anime, mnistm, usps, svhn, maps, digits, digits-m, folder (digits
and digits-m are embedded in scikit-learn and take no --src). Writes OUT_DIR/{split}-000000.tar ... and
OUT_DIR/index.json (maps: OUT_DIR/A and OUT_DIR/B), then prints one summary line. A --src that
holds no accepted layout stops with `error: ...` (exit code 2) before anything is written.
`--workers` (default: all cores) read and encode images in parallel; `--encoding` (writer.py): raw
(decode-free .npy) or png for images up to 64 px, auto = raw. `index`: shards/index.py.
Sample and index formats: docs/data.md.
"""
from __future__ import annotations

import argparse
import os
import sys

from distgen.errors import DataError
from shards import anime, celeba, digits, digits_m, faces, folder, maps, mnistm, svhn, usps
from shards import index as index_command
from shards.writer import ENCODINGS, ShardSetWriter

FORMATS = {"celeba": celeba, "faces": faces, "anime": anime, "mnistm": mnistm, "usps": usps, "svhn": svhn,
           "maps": maps, "digits": digits, "digits-m": digits_m, "folder": folder}
SHOW_SKIPPED = 10  # file names in the summary line; index.json lists them all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shards", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description=__doc__.split("\n\nFORMAT")[0])
    sub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True,
                                help=f"one of: {', '.join(FORMATS)}, index")
    for name, module in FORMATS.items():
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0])
        p.add_argument("--out", required=True, help="output folder for the shards and index.json")
        p.add_argument("--samples-per-shard", type=int, default=getattr(module, "SAMPLES_PER_SHARD", 2000))
        p.add_argument("--encoding", choices=ENCODINGS, default="auto",
                       help="images up to 64 px: raw (decode-free .npy) or png; auto = raw (docs/data.md)")
        p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                       help="processes reading and encoding images (default: all cores)")
        module.add_arguments(p)
    index_command.add_arguments(sub.add_parser("index", help=index_command.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    if args.format == "index":
        try:
            return index_command.main(args)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    writer = ShardSetWriter(args.out, args.samples_per_shard, args.encoding, max(1, args.workers))
    try:
        fields = FORMATS[args.format].convert(args, writer)
    except DataError as exc:
        writer.abort()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        writer.abort()
        raise
    index = writer.finish(**fields)
    counts = ", ".join(f"{s}={v['count']}" for s, v in index["splits"].items())
    skipped = index["skipped"]["files"]
    names = ": " + ", ".join(skipped[:SHOW_SKIPPED]) + (", ..." if len(skipped) > SHOW_SKIPPED else "")
    print(f"wrote {sum(v['count'] for v in index['splits'].values())} samples ({counts}) "
          f"to {args.out}; skipped {len(skipped)}{names if skipped else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
