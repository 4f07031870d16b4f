"""Print the reports' domain-adaptation table (rows source-only / DANN / target-only, columns =
scenarios, cells = target test accuracy %) from dann run dirs, as Markdown.

    python launch/dann_table.py runs/dann_digits/* runs/dann_mnistm_usps/* ...
"""
from __future__ import annotations

import argparse
import sys

from distgen.errors import ConfigError
from distgen.tables import dann_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="run dirs of dann runs (any mode, any scenario)")
    args = parser.parse_args(argv)
    try:
        print(dann_table(args.run_dirs))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
