"""Runs grouped by config keys: each final metric as mean ± std over a group's runs (its seeds), with n.

    python launch/compare.py runs/sweeps/NAME --group-by model.mode [--metrics eval/target_acc] [--csv FILE]

Used by launch/compare.py (and launch/sweep.py to print a study's table). A sweep dir (one with a
sweep.json, written by launch/sweep.py) stands for its run dirs. The table's columns are the
group-by keys, then every other config key that is constant within each group but differs between
groups (what else the groups differ in), then n and the metrics. std is the sample standard deviation
(ddof 1; "–" for a group of one). No torch import.
"""
from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from distgen.errors import ConfigError
from distgen.evaluation.runs import RunData, is_number, numeric_keys, zero_throughout

MANIFEST = "sweep.json"
IGNORED = ("run.dir", "run.seed")  # they differ run by run, never a property of a group
MISSING = "–"


@dataclass
class Group:
    values: dict  # group-by key -> value
    runs: list[RunData] = field(default_factory=list)


def read_sweep(path: str | Path) -> dict | None:
    """A sweep dir's manifest (None when `path` has no sweep.json), each run's "dir" as found on disk.

    The manifest names run dirs as launch/sweep.py saw them (relative to the repository for the
    default --root); a run dir that is not there from here is looked for in the sweep dir itself."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
        runs = data["runs"]
        for run in runs:
            found = Path(path) / Path(run["dir"]).name
            if not (Path(run["dir"]) / "config.yaml").is_file() and (found / "config.yaml").is_file():
                run["dir"] = str(found)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{manifest}: not a sweep manifest ({exc!r})") from None
    return data


def expand_paths(paths: list[str]) -> list[str]:
    """Run dirs as given; a sweep dir becomes its runs' dirs (in grid order) that exist on disk."""
    out = []
    for path in paths:
        data = read_sweep(path)
        if data is None:
            out.append(path)
            continue
        found = [r["dir"] for r in data["runs"] if (Path(r["dir"]) / "config.yaml").is_file()]
        if not found:
            raise ConfigError(f"sweep '{path}' has no run with a config.yaml yet; run it first (launch/sweep.py)")
        out += found
    return out


def table_spec(paths: list[str]) -> dict:
    """The `table` a study saved in its manifest ({group_by, metrics}), when every path is that sweep."""
    specs = []
    for path in paths:
        manifest = Path(path) / MANIFEST
        specs.append(json.loads(manifest.read_text()).get("table") or {} if manifest.is_file() else {})
    return specs[0] if specs and all(s == specs[0] for s in specs) else {}


def group_runs(runs: list[RunData], keys: list[str]) -> list[Group]:
    """Runs with equal values of `keys`, in order of first appearance."""
    for key in keys:
        if not any(key in r.config for r in runs):
            known = sorted({k for r in runs for k in r.config})
            near = [k for k in known if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
            raise ConfigError(f"--group-by '{key}' is not a config key of these runs"
                              + (f"; did you mean {', '.join(near)}?" if near else "; e.g. model.mode, optim.lr_d"))
    groups: dict[str, Group] = {}
    for run in runs:
        values = {k: run.config.get(k, MISSING) for k in keys}
        groups.setdefault(json.dumps(values, sort_keys=True, default=str), Group(values)).runs.append(run)
    return list(groups.values())


def describing_keys(groups: list[Group], keys: list[str]) -> list[str]:
    """The group-by keys, then config keys constant within every group that differ between groups."""
    all_keys = dict.fromkeys(k for g in groups for r in g.runs for k in r.config)
    extra = []
    for key in all_keys:
        if key in keys or key in IGNORED:
            continue
        per_group = [{json.dumps(r.config.get(key, MISSING), sort_keys=True) for r in g.runs} for g in groups]
        if all(len(s) == 1 for s in per_group) and len(set().union(*per_group)) > 1:
            extra.append(key)
    return list(keys) + extra


def summary(values: list[float]) -> tuple[float, float, int]:
    """(mean, sample std or nan for one value, n)."""
    n = len(values)
    if not n:
        return math.nan, math.nan, 0
    return statistics.fmean(values), (statistics.stdev(values) if n > 1 else math.nan), n


def metric_names(groups: list[Group], wanted: list[str] | None = None) -> list[str]:
    found = list(dict.fromkeys(k for g in groups for r in g.runs for k in r.final))
    if not wanted:
        return found
    missing = [m for m in wanted if m not in found]
    if missing:
        raise ConfigError(f"--metrics: no run logged '{missing[0]}'; logged: {', '.join(found) or 'nothing'}")
    return list(wanted)


def rows(groups: list[Group], columns: list[str], metrics: list[str]) -> list[dict]:
    """One dict per group: column values, "n" (runs), and metric -> (mean, std, n)."""
    out = []
    for g in groups:
        row = {k: g.runs[0].config.get(k, MISSING) for k in columns}
        row["n"] = len(g.runs)
        for m in metrics:
            row[m] = summary([r.final[m] for r in g.runs if is_number(r.final.get(m))])
        out.append(row)
    return out


def fmt_stat(stat: tuple[float, float, int], n_runs: int) -> str:
    mean, std, n = stat
    if not n:
        return MISSING
    text = f"{mean:.4g}" + (f" ± {std:.2g}" if n > 1 else "")
    return text + (f" (n={n})" if n != n_runs else "")  # a metric some runs of the group lack


def fmt_value(value) -> str:
    if value is MISSING:
        return MISSING
    return f"{value:.6g}" if isinstance(value, float) else value if isinstance(value, str) else json.dumps(value)


def cells(table: list[dict], columns: list[str], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """(header, one row of texts per group) of the grouped table, for Markdown and HTML alike."""
    head = [*columns, "n", *(f"{m} (mean ± std)" for m in metrics)]
    body = [[fmt_value(row[k]) for k in columns] + [str(row["n"])] + [fmt_stat(row[m], row["n"]) for m in metrics]
            for row in table]
    return head, body


def markdown(table: list[dict], columns: list[str], metrics: list[str]) -> str:
    head, body = cells(table, columns, metrics)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def write_csv(table: list[dict], columns: list[str], metrics: list[str], path: Path) -> None:
    """One row per group: the columns, n, and <metric>_mean, <metric>_std, <metric>_n."""
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*(f"config.{k}" for k in columns), "n",
                      *(f"{m}_{s}" for m in metrics for s in ("mean", "std", "n"))])
        for row in table:
            stats = [("" if isinstance(v, float) and math.isnan(v) else v) for m in metrics for v in row[m]]
            out.writerow([fmt_value(row[k]) for k in columns] + [row["n"]] + stats)


def label(group: Group) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={fmt_value(v)}" for k, v in group.values.items()) or "all"


def bands(groups: list[Group], key: str) -> dict[str, list[tuple[float, float, float]]]:
    """label -> (step, mean, std) at every step logged by at least one run of the group."""
    out = {}
    for g in groups:
        at: dict[float, list[float]] = {}
        for run in g.runs:
            for row in run.history:
                if is_number(row.get(key)):
                    at.setdefault(row["step"], []).append(row[key])
        out[label(g)] = [(s, *summary(v)[:2]) for s, v in sorted(at.items())]
    return out


def grouped(runs: list[RunData], keys: list[str], metrics: list[str]) -> tuple[list[Group], list[str], list[str],
                                                                            list[dict]]:
    """(groups, table columns, metrics, one row per group) of compare.py --group-by."""
    groups = group_runs(runs, keys)
    columns = describing_keys(groups, keys)
    metrics = metric_names(groups, metrics)
    return groups, columns, metrics, rows(groups, columns, metrics)


def plot_group_curves(groups: list[Group], path: Path) -> Path | None:
    """Each logged key's panel, a line per group (mean ± std band); keys zero throughout get none."""
    from distgen.evaluation.plots import plot_bands  # matplotlib only when drawing

    history = [row for g in groups for r in g.runs for row in r.history]
    curves = [k for k in numeric_keys(history) if not zero_throughout(history, k)]
    return plot_bands([(k, bands(groups, k)) for k in curves], path) if curves else None


def report(runs: list[RunData], keys: list[str], metrics: list[str], plot: Path, csv_path: str) -> str:
    """The grouped markdown table (and CSV, and banded curves at `plot`) of launch/compare.py --group-by."""
    groups, columns, metrics, table = grouped(runs, keys, metrics)
    if csv_path:
        write_csv(table, columns, metrics, Path(csv_path))
    text = f"## Final metrics by {', '.join(keys)} (mean ± std over runs)\n\n" + markdown(table, columns, metrics)
    path = plot_group_curves(groups, plot)
    if path:
        text += f"\n## Learning curves (mean ± std)\n\n![learning curves]({path})\n"
    return text
