"""Train any recipe.

    accelerate launch launch/train.py RECIPE.yaml [key=value ...] [--dry-run] [--resume auto|PATH]
    python launch/train.py recipes/quickstart.yaml train.steps=200        # one process

`--dry-run` prints the resolved config and exits. `--resume auto` continues the newest run of the
recipe (or run.dir=...) from checkpoints/latest, or starts fresh if there is none.
"""
from __future__ import annotations

import argparse
import sys

from distgen import config, recipes
from distgen.errors import ConfigError, DataError, TrainingError
from distgen.families import FAMILIES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="train.py RECIPE.yaml [key=value ...] [--dry-run] [--resume auto|PATH]")
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr_d=1e-4 train.steps=500")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--resume", default=None, help="'auto' or a checkpoint / run dir")
    args = parser.parse_args(argv)
    try:
        cfg = recipes.load(args.recipe, args.overrides)
        if args.dry_run:
            print(config.dump(cfg), end="")
            return 0
        if FAMILIES[cfg.family].STYLE == "adversarial":
            from distgen.loops.adversarial import train
        else:
            from distgen.loops.single import train
        train(cfg, args.resume)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
