"""Compare runs: a table of final metrics, the config keys that differ, overlaid learning curves.

    python launch/compare.py RUN_DIR RUN_DIR ... [--csv FILE] [--out FILE]
    python launch/compare.py --wandb ENTITY/PROJECT [--filter '{"config.family": "dcgan"}'] [--csv FILE]
    python launch/compare.py --wandb ENTITY/PROJECT --group SWEEP_NAME [--group-by KEY[,KEY]] [--csv FILE]
    python launch/compare.py runs/sweeps/NAME [RUN_DIR ...] --group-by KEY[,KEY] [--metrics M,M] [--csv FILE]

Markdown goes to stdout. Final metrics are the last logged value of every metrics.jsonl key and
the newest eval/step_<N>.json as eval/<key> (from W&B: the run summary, with the same names,
since the loops log the same keys there). Only config keys whose values differ are listed;
run.dir is left out (it differs for every run and names the columns). How each run ran
(RUN_DIR/run.json: mixed precision, world size, machines, data.num_workers, distgen commit, how it
ended) is listed per run and compared like config keys, as run.json/<fact>. The learning curves go
next to what is compared, and the last line on stderr says where: DIR/compare_curves.png for one
run or sweep dir, the runs' common parent folder for several (./compare_curves.png for W&B runs);
--out FILE (or --plot) puts them elsewhere. One panel per logged key with one line per run (none
for a key that is 0 throughout, such as nonfinite_skipped); --csv FILE writes one row per run. A sweep dir
(launch/sweep.py) stands for its runs. --group-by prints one row per group instead: each final
metric as mean ± std over the group's runs (seeds) with n, and the keys the groups differ in;
curves are each group's mean with a ± std band; --csv gets one row per group
(distgen/evaluation/grouping.py). A study's sweep dir groups by its saved table without --group-by.
The W&B path reads config, summary and history through wandb's public API (wandb.Api). --group NAME
selects the runs of one W&B group (the API's own filter {"group": NAME}, added to --filter): a sweep
logs every run into the group named after it, and its runs record what to group by
(log.wandb.group_by: the study's table, else the swept keys other than run.seed; log.wandb.group_metrics:
the table's metrics), so --group prints the grouped table without --group-by; runs that record
nothing (trained by hand, or by an older distgen) need --group-by.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

from distgen.errors import ConfigError, DataError
from distgen.evaluation import grouping
from distgen.evaluation.plots import plot_panels, series
from distgen.evaluation.runs import (RunData, describe, flatten, is_number, load_run_dir, numeric_keys, short_names,
                                     zero_throughout)

IGNORED_CONFIG = ("run.dir",)
MISSING = "–"


def differing_keys(runs: list[RunData]) -> list[str]:
    """Config keys whose values are not all equal (a key missing in some run counts as differing)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.config if k not in IGNORED_CONFIG))
    return [k for k in keys if len({json.dumps(r.config.get(k, MISSING), sort_keys=True) for r in runs}) > 1]


def group_filter(filters: dict | None, group: str) -> dict | None:
    """--filter with the W&B group added (as its own condition when --filter names a group too)."""
    if not group:
        return filters
    if not filters:
        return {"group": group}
    return {**filters, "group": group} if "group" not in filters else {"$and": [filters, {"group": group}]}


def load_wandb(path: str, filters: dict | None, api=None, group: str = "") -> list[RunData]:
    """Runs of a W&B project through the public API: config, summary as final values, full history.
    `group`: only the runs of that W&B group (passed to the API as a filter, not matched here)."""
    import wandb

    try:
        api = api or wandb.Api()
        runs = []
        for run in api.runs(path, filters=group_filter(filters, group)):
            config = flatten({k: v for k, v in dict(run.config).items() if not k.startswith("_")})
            final = {k: v for k, v in dict(run.summary_metrics).items() if not k.startswith("_") and is_number(v)}
            history = [{"step": row["_step"], **{k: v for k, v in row.items() if not k.startswith("_")}}
                       for row in run.scan_history() if "_step" in row]
            runs.append(RunData(run.name or run.id, config, history, final))
    except (wandb.errors.Error, OSError, ValueError) as exc:
        raise ConfigError(f"--wandb {path}: {exc} (log in with `wandb login` or set WANDB_API_KEY)") from None
    if not runs and group:
        raise ConfigError(f"--wandb {path}: W&B group '{group}' has no runs{' that match --filter' if filters else ''}"
                          f" (a sweep's group is its name, as in runs/sweeps/<name>; check the project and the name "
                          f"in the W&B UI's Group column)")
    if not runs:
        raise ConfigError(f"--wandb {path}: no runs{' match --filter' if filters else ''}")
    return runs


def recorded_table(runs: list[RunData], group: str) -> tuple[list[str], list[str]]:
    """(group_by, metrics) that a W&B group's runs recorded (log.wandb.group_by / group_metrics, set by
    launch/sweep.py). Recorded metrics that no run logged to W&B are left out with a note (a study's
    `after` evaluations write to the run dirs only). A ConfigError asking for --group-by when the runs
    record no group_by, or disagree on it."""
    recorded = {json.dumps([r.config.get(f"log.wandb.{k}") or [] for k in ("group_by", "group_metrics")])
                for r in runs}
    keys, metrics = json.loads(next(iter(recorded))) if len(recorded) == 1 else ([], [])
    if not keys:
        swept = [k for k in differing_keys(runs) if k not in grouping.IGNORED]
        why = "disagree on" if len(recorded) > 1 else "do not record"
        hint = f", e.g. --group-by {','.join(swept)} (the config keys its runs differ in)" if swept else ""
        raise ConfigError(f"W&B group '{group}': its runs {why} what to group by (log.wandb.group_by, which "
                          f"launch/sweep.py sets); pass --group-by KEY[,KEY]{hint}")
    logged = {k for r in runs for k in r.final}
    missing = [m for m in metrics if m not in logged]
    if missing:
        print(f"note: the sweep's table lists {', '.join(missing)}, which no run of W&B group '{group}' logged "
              f"(evaluations run after training write to the run dirs only: compare runs/sweeps/{group} for them)",
              file=sys.stderr)
    return keys, [m for m in metrics if m in logged]


def fmt(value) -> str:
    if value is MISSING:
        return MISSING
    text = f"{value:.6g}" if isinstance(value, float) else value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|")


def markdown(runs: list[RunData], diff: list[str], plot: Path | None) -> str:
    names = [r.name for r in runs]
    header = lambda first: ["| " + " | ".join([first] + names) + " |", "|" + "---|" * (len(names) + 1)]  # noqa: E731
    metrics = list(dict.fromkeys(k for r in runs for k in r.final))
    lines = ["## Final metrics", ""]
    lines += header("metric") + [f"| {k} | " + " | ".join(fmt(r.final.get(k, MISSING)) for r in runs) + " |"
                                 for k in metrics] if metrics else ["No metrics logged."]
    if any(r.facts for r in runs):
        lines += ["", "## How each run ran (run.json)", ""] + [f"- {r.name}: {describe(r.facts)}" for r in runs]
    lines += ["", "## Config keys that differ", ""]
    lines += header("key") + [f"| {k} | " + " | ".join(fmt(r.config.get(k, MISSING)) for r in runs) + " |"
                              for k in diff] if diff else ["None: the configs are identical."]
    if plot:
        lines += ["", "## Learning curves", "", f"![learning curves]({plot})"]
    return "\n".join(lines) + "\n"


def write_csv(runs: list[RunData], diff: list[str], path: Path) -> None:
    metrics = list(dict.fromkeys(k for r in runs for k in r.final))
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["run"] + [f"config.{k}" for k in diff] + metrics)
        for r in runs:
            out.writerow([r.name] + [fmt(r.config.get(k, MISSING)) for k in diff]
                         + [r.final.get(k, "") for k in metrics])


PLOT = "compare_curves.png"


def default_plot(run_dirs: list[str]) -> Path:
    """Next to what is compared: in the one run or sweep dir given, else in the dirs' common parent folder
    (W&B runs, which have no local dir: the current directory)."""
    if not run_dirs:
        return Path(PLOT)
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / PLOT
    return Path(os.path.commonpath([os.path.abspath(d) for d in run_dirs])) / PLOT


def say_where(plot: Path | None) -> None:
    if plot is not None and plot.is_file():
        print(f"learning curves: {plot}", file=sys.stderr)


def plot_curves(runs: list[RunData], path: Path) -> Path | None:
    history = [row for r in runs for row in r.history]
    keys = [k for k in numeric_keys(history) if not zero_throughout(history, k)]  # no all-zero panels
    if not keys:
        return None
    return plot_panels([(k, {r.name: series(r.history, k) for r in runs}) for k in keys], path, cols=4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="*", help="run dirs to compare (or use --wandb)")
    parser.add_argument("--wandb", default="", metavar="ENTITY/PROJECT", help="read the runs from W&B instead")
    parser.add_argument("--filter", default="", help="W&B run filter as JSON (MongoDB style, as wandb.Api().runs)")
    parser.add_argument("--group", default="", metavar="NAME",
                        help="with --wandb: the runs of this W&B group (a sweep's name), grouped as the sweep recorded")
    parser.add_argument("--csv", default="", help="also write one row per run to this CSV file")
    parser.add_argument("--out", "--plot", dest="plot", default="",
                        help=f"overlaid learning curves (PNG; default: {PLOT} next to the runs compared)")
    parser.add_argument("--group-by", default="", help="KEY[,KEY]: one row per group, mean ± std over its runs")
    parser.add_argument("--metrics", default="", help="with --group-by: these final metrics only (comma-separated)")
    args = parser.parse_args(argv)
    try:
        if bool(args.wandb) == bool(args.run_dirs):
            raise ConfigError("give run dirs or --wandb ENTITY/PROJECT (one of the two)")
        if args.group and not args.wandb:
            raise ConfigError("--group selects the runs of a W&B group: add --wandb ENTITY/PROJECT "
                              "(a local sweep: pass its dir, runs/sweeps/NAME)")
        if args.wandb:
            try:
                filters = json.loads(args.filter) if args.filter else None
            except json.JSONDecodeError as exc:
                raise ConfigError(f"--filter is not JSON ({exc.msg}), e.g. '{{\"config.family\": \"dcgan\"}}'")
            runs = load_wandb(args.wandb, filters, group=args.group)
            if args.group and not args.group_by:
                keys, recorded_metrics = recorded_table(runs, args.group)
                args.group_by, args.metrics = ",".join(keys), args.metrics or ",".join(recorded_metrics)
        else:
            spec = grouping.table_spec(args.run_dirs)
            args.group_by = args.group_by or ",".join(spec.get("group_by", []))
            args.metrics = args.metrics or ",".join(spec.get("metrics", []))
            run_dirs = grouping.expand_paths(args.run_dirs)
            runs = [load_run_dir(d, name) for d, name in zip(run_dirs, short_names(run_dirs))]
        if args.group_by:
            keys, metrics = ([v.strip() for v in t.split(",") if v.strip()] for t in (args.group_by, args.metrics))
            plot = Path(args.plot or default_plot(args.run_dirs))
            print(grouping.report(runs, keys, metrics, plot, args.csv), end="")
            say_where(plot)
            return 0
        diff = differing_keys(runs)
        plot = plot_curves(runs, Path(args.plot or default_plot(args.run_dirs)))
        if args.csv:
            write_csv(runs, diff, Path(args.csv))
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(runs, diff, plot), end="")
    say_where(plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
