"""Train any recipe.

    accelerate launch launch/train.py RECIPE.yaml [key=value ...] [--dry-run] [--resume auto|PATH]
    python launch/train.py recipes/quickstart.yaml train.steps=200        # one process

Overrides and flags go in any order (`train.py RECIPE --resume auto train.steps=1000`).
`--dry-run` prints the resolved config and exits. `--resume auto` continues the newest run of the
recipe (or run.dir=...) from checkpoints/latest, or starts fresh if there is none.
Exit status: 0 when the run finished; 128 + N when signal N stopped it early with a checkpoint (130 for
Ctrl-C, 143 for TERM: `--resume auto` continues it, and `train.py && evaluate.py` stops there); 2 for a
recipe or data error, 3 for a training error. Under a launcher a stopped process exits 0 and the launcher
decides (distgen/loops/signals.py).
`--accept-new-data-order` resumes a checkpoint written under another world size, data.num_workers or
mixed precision (refused otherwise; distgen/loops/checkpointer.py says why).
"""
from __future__ import annotations

import argparse
import sys

from distgen.loops import signals

if __name__ == "__main__":  # first, before the heavy imports: a stop signal during startup is kept, not fatal
    signals.install()

from distgen import config, recipes  # noqa: E402
from distgen.errors import ConfigError, DataError, TrainingError  # noqa: E402
from distgen.loops.run_dir import note_failure  # noqa: E402


INCEPTION_METRICS = ("fid", "isc", "kid", "prc")


def check_inception_weights(cfg) -> None:
    """Periodic FID/IS/KID/PRC in training need local InceptionV3 weights: say so before training starts,
    in the recipe's terms (the loop checks again; this wording names the keys a train.py user sets)."""
    if recipes.family_class(cfg.family).STYLE != "adversarial" or cfg.eval.every <= 0:
        return
    if not any(m in INCEPTION_METRICS for m in cfg.eval.metrics):
        return
    from distgen.evaluation.inception import URL_INCEPTION_V3, WEIGHTS_ENV, resolve_weights

    resolve_weights(cfg.eval.inception_weights, how=(
        f"set eval.inception_weights=PATH (or {WEIGHTS_ENV}=PATH) to a local copy of torch-fidelity's "
        f"InceptionV3 weights (download once from {URL_INCEPTION_V3}), or eval.every=0 to train without periodic "
        f"evaluation"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     usage="train.py RECIPE.yaml [key=value ...] [--dry-run] [--resume auto|PATH]")
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr_d=1e-4 train.steps=500")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--resume", default=None, help="'auto' or a checkpoint / run dir")
    parser.add_argument("--accept-new-data-order", action="store_true",
                        help="resume under another world size, data.num_workers or mixed precision "
                             "(= run.accept_new_data_order=true)")
    # Intermixed: overrides may come before or after the flags (`RECIPE --resume auto train.steps=1000`).
    args = parser.parse_intermixed_args(argv)
    try:
        overrides = args.overrides + (["run.accept_new_data_order=true"] if args.accept_new_data_order else [])
        cfg = recipes.load(args.recipe, overrides)
        if args.dry_run:
            print(config.dump(cfg), end="")
            return 0
        check_inception_weights(cfg)
        if recipes.family_class(cfg.family).STYLE == "adversarial":
            from distgen.loops.adversarial import train
        else:
            from distgen.loops.single import train
        train(cfg, args.resume)
        return signals.exit_code()
    except (ConfigError, DataError) as exc:
        note_failure(str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        note_failure(str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
