"""Command line of the converters.

    python -m shards FORMAT --out OUT_DIR [--src RAW_DIR] [--samples-per-shard N] [format options]

Writes OUT_DIR/{split}-000000.tar ... and OUT_DIR/index.json, then prints one summary line.
"""
from __future__ import annotations

import argparse
import sys

from distgen.errors import DataError
from shards import digits
from shards.writer import ShardSetWriter

FORMATS = {"digits": digits}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shards", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="format", metavar="FORMAT", required=True,
                                help=f"one of: {', '.join(FORMATS)}")
    for name, module in FORMATS.items():
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0])
        p.add_argument("--out", required=True, help="output folder for the shards and index.json")
        p.add_argument("--samples-per-shard", type=int, default=getattr(module, "SAMPLES_PER_SHARD", 2000))
        module.add_arguments(p)
    args = parser.parse_args(argv)

    writer = ShardSetWriter(args.out, args.samples_per_shard)
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
    print(f"wrote {sum(v['count'] for v in index['splits'].values())} samples ({counts}) "
          f"to {args.out}; skipped {index['skipped']['count']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
