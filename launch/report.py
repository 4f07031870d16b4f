"""Write the report of a run or of a sweep: DIR/report/index.html (one offline page) and DIR/report/index.md.

    python launch/report.py RUN_DIR
    python launch/report.py SWEEP_DIR [--group-by KEY[,KEY]] [--metrics M,M]

A run dir (one with a config.yaml), top to bottom:
  - the run's facts, from run.json: how it ended (finished, stopped early or failed, and why), the last
    logged step of train.steps, the command line, the distgen commit (and whether it had uncommitted
    changes), when it started and ended, the wall time summed over its sessions (resumes), mixed
    precision, world size, machines, data.num_workers and host; then the final metrics (the last
    logged value of every key; the newest eval/step_<N>.json as eval/<key>) and the resolved config
    (config.yaml, folded);
  - the tables of eval/step_<N>.json (and accuracy per class);
  - learning curves, matplotlib PNGs in RUN_DIR/report/: curves_losses.png (a panel per net),
    curves_d_outputs.png (D(x), D(G(z))), curves_accuracy.png, curves_eval.png (eval/ results over
    steps), curves_speed.png (img/s). A key that is 0 at every logged step (nonfinite_skipped, say)
    gets no panel; one line names the keys left out;
  - samples over time: the fixed-noise grids samples/step_<N>.png side by side, as thumbnails;
  - evaluation figures: the newest eval/<kind>_step_<N>.png of each kind (evaluate.py's grid, a VAE's
    reconstructions and t-SNE, DANN's t-SNE by class and domain).
A sweep dir (one with a sweep.json, from launch/sweep.py): the sweep's facts (name, recipes, fixed
overrides, grid, the run statuses in sweep.json, and from the runs' run.json their distgen commits,
precision and world size, and wall time summed); the grouped table of `compare.py --group-by` (each
final metric as mean ± std over a group's runs, with n; grouped by --group-by, else by a study's saved
table, else by the swept keys other than run.seed; the metrics of --metrics, else the study's, else
the eval/ results); each group's mean learning curves with a ± std band (report/curves.png); one
sample grid per group side by side (the newest grid of the group's first finished run); and every run
with its status and a link to its own report where it has one.

Bounded size: index.html embeds the curve figures and thumbnails (report/thumbs/; PNG or JPEG,
whichever is smaller) and links each full-size image by a relative path (report/ lies inside the dir
it reports on, so the links work wherever the dir is copied whole). A run page shows at most 13 sample
grids (12 evenly spaced from the first, and the last) at <= 256 px wide, and each kind's evaluation
figure at <= 640 px; a sweep page one grid per group for at most 24 groups. So the page stays a few MB
whatever the number of grids. index.md shows the same, with the figures and thumbnails as files.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

from distgen.errors import ConfigError, DataError
from distgen.evaluation import grouping
from distgen.evaluation.pages import write
from distgen.evaluation.plots import plot_panels, series, thumbnail
from distgen.evaluation.runs import (is_number, load_run_dir, numeric_keys, read_config_tree, read_evals,
                                     read_facts, read_history, sample_grids, zero_throughout)

# Bookkeeping of an evaluation, not results: no curve, not compared across runs (still in its table)
SETTINGS = ("kid_subset_size", "pixel_threshold", "pixel_size")


def is_count(key: str) -> bool:
    """An evaluation key (without eval/) that counts or sets up rather than measures: num_samples,
    num_reference, the VAE's num_test, num_pairs, the KID subset and pixel-accuracy settings."""
    return key.startswith("num_") or key in SETTINGS
THUMB_WIDTH = 256  # px, sample grids
FIGURE_WIDTH = 640  # px, evaluation figures
MOST_GRIDS = 12  # a run's grids shown: this many evenly spaced from the first, and the last
MOST_GROUPS = 24  # a sweep's groups with a grid shown


def group_of(key: str) -> str:
    """Which figure a logged key belongs to."""
    if key.startswith("eval/"):
        return "eval"
    if key == "img/s":
        return "speed"
    if key.startswith("D("):
        return "d_outputs"
    if "acc" in key:
        return "accuracy"
    return "losses"


def figures(history: list[dict], evals: dict[int, dict], out: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(title, png) of every learning-curve figure this run's logs can fill, and the keys left out
    because they are 0 at every logged step."""
    eval_rows = [{"step": s, **{f"eval/{k}": v for k, v in r.items() if k != "step"}} for s, r in evals.items()]
    rows = history + eval_rows
    keys = [k for k in numeric_keys(rows)
            if not (k.startswith("eval/") and (is_count(k[5:]) or k.startswith("eval/acc_class_")))]
    zero = [k for k in keys if zero_throughout(rows, k)]
    keys = [k for k in keys if k not in zero]
    made = []
    losses: dict[str, dict] = {}
    for key in (k for k in keys if group_of(k) == "losses"):
        net = key.split("/")[0] if "/" in key else "other"
        losses.setdefault(net, {})[key] = series(history, key)
    if losses:
        made.append(("Loss terms", plot_panels([(f"{net} terms", lines) for net, lines in losses.items()],
                                               out / "curves_losses.png")))
    for group, title, file in (("d_outputs", "D(x) and D(G(z))", "curves_d_outputs.png"),
                               ("accuracy", "Accuracies during training", "curves_accuracy.png"),
                               ("speed", "Throughput", "curves_speed.png")):
        lines = {k: series(history, k) for k in keys if group_of(k) == group}
        if lines:
            made.append((title, plot_panels([(title, lines)], out / file)))
    eval_keys = [k for k in keys if group_of(k) == "eval"]
    if eval_keys:  # one panel per metric: FID and accuracy do not share a scale; a step once (both sources)
        made.append(("Evaluation", plot_panels([(k[5:], {k: sorted(dict(series(rows, k)).items())})
                                                for k in eval_keys], out / "curves_eval.png")))
    return made, zero


def family_figures(run_dir: Path) -> dict[str, tuple[int, Path]]:
    """kind -> (step, path) of the newest eval/<kind>_step_<N>.png of every kind."""
    newest: dict[str, tuple[int, Path]] = {}
    for path in (run_dir / "eval").glob("*_step_*.png"):
        match = re.fullmatch(r"(.+)_step_(\d+)\.png", path.name)
        if match and int(match.group(2)) >= newest.get(match.group(1), (-1, None))[0]:
            newest[match.group(1)] = (int(match.group(2)), path)
    return dict(sorted(newest.items()))


def fmt(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def metrics_tables(evals: dict[int, dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the eval results: main metrics, and per-class accuracy if present."""
    tables = []
    for title, wanted in (("Evaluation results (eval/step_<N>.json)", lambda k: not k.startswith("acc_class_")),
                          ("Accuracy per class", lambda k: k.startswith("acc_class_"))):
        cols = list(dict.fromkeys(k for r in evals.values() for k, v in r.items()
                                  if k != "step" and is_number(v) and wanted(k)))
        if cols:
            rows = [[str(s)] + [fmt(r[c]) if c in r else "" for c in cols] for s, r in evals.items()]
            tables.append((title, ["step"] + cols, rows))
    return tables


# -- the run's facts -------------------------------------------------------------------------------

def parse_time(text) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def duration(seconds: float) -> str:
    """4 min 41 s, 2 h 05 min, 3 d 4 h."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def sessions_time(facts: dict) -> tuple[float | None, int, int]:
    """(seconds summed over the run's sessions that recorded an end, sessions, sessions without an end).
    A session is a start or a resume; run.json keeps the earlier ones under "sessions"."""
    sessions = [s for s in [*facts.get("sessions", []), facts] if isinstance(s, dict)]
    spans = [(parse_time(s.get("started")), parse_time(s.get("ended"))) for s in sessions]
    done = [(end - start).total_seconds() for start, end in spans if start and end]
    return (sum(done) if done else None), len(sessions), len(sessions) - len(done)


def wall_time(facts: dict) -> str:
    seconds, sessions, open_ = sessions_time(facts)
    if seconds is None:
        return "not recorded (no session has an end time)"
    text = duration(seconds)
    if sessions > 1:
        text += f" over {sessions} sessions (started, then resumed {sessions - 1} time(s))"
    if open_:
        text += f"; {open_} session(s) without an end time (running, or killed) not counted"
    return text


def ending(facts: dict, last: int, steps) -> str:
    status, why = facts.get("status"), facts.get("why")
    if status == "finished":
        return f"finished: all {steps} steps"
    if status == "stopped early":
        return f"stopped early at step {facts.get('last_step', last)} of {steps}: {why or 'no reason recorded'}"
    if status == "failed":
        return f"failed at step {facts.get('last_step', last)} of {steps}: {why or 'no reason recorded'}"
    if status == "running":
        return f"no end recorded: still running, or killed without warning (last logged step {last} of {steps})"
    return str(status or "not recorded")


def run_facts(run_dir: Path, cfg: dict, facts: dict, history: list[dict]) -> list[tuple[str, str]]:
    """(label, value) rows of the facts block at the top of a run's report."""
    steps = cfg.get("train", {}).get("steps", facts.get("train_steps", "?"))
    last = history[-1]["step"] if history else 0
    rows = [("run dir", f"`{run_dir}`"),
            ("recipe", f"`{cfg.get('recipe', '') or '?'}`, family `{cfg.get('family', '?')}`"),
            ("final step", f"last logged step {last} of {steps}")]
    if not facts:
        return rows + [("how it ran", "no run.json (a run from before distgen recorded it)")]
    commit, dirty = facts.get("commit"), facts.get("commit_dirty")
    first = next((s for s in [*facts.get("sessions", []), facts] if isinstance(s, dict)), facts)
    hosts = list(dict.fromkeys(str(s.get("host", "?")) for s in [*facts.get("sessions", []), facts]
                               if isinstance(s, dict)))
    command = facts.get("command")
    rows += [("how it ended", ending(facts, last, steps)),
             ("command", f"`{shlex.join(map(str, command))}`" if isinstance(command, list) and command
              else "not recorded"),
             ("distgen commit", (f"`{commit}`" + (" with uncommitted changes" if dirty else
                                                  " (clean)" if dirty is False else "")) if commit
              else "unknown (not a git checkout)"),
             ("started", str(first.get("started") or "not recorded")),
             ("ended", str(facts.get("ended") or "not recorded")),
             ("wall time", wall_time(facts)),
             ("mixed precision", str(facts.get("mixed_precision", "?"))),
             ("processes", f"world size {facts.get('world_size', '?')} on {facts.get('machines', '?')} machine(s), "
                           f"data.num_workers {facts.get('num_workers', '?')}"),
             ("host", ", ".join(hosts))]
    if facts.get("resumed_from"):
        rows.append(("resumed from", f"`{facts['resumed_from']}`"))
    return rows


# -- images: bounded thumbnails linked to the full-size files ----------------------------------------

def evenly(items: list, most: int) -> list:
    """`most` items evenly spaced from the first, and the last (all of them when there are few)."""
    if len(items) <= most + 1:
        return list(items)
    return [items[i] for i in sorted({round(i * (len(items) - 1) / most) for i in range(most + 1)})]


def thumbs(images: list[tuple[str, Path]], out: Path, width: int, notes: list[str]) -> list[tuple[str, Path, Path]]:
    """(caption, thumbnail, full-size file) per image; an unreadable image is left out with a note."""
    made = []
    for caption, full in images:
        name = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", os.path.splitext(os.path.relpath(full, out.parent))[0]).strip("._")
        try:
            made.append((caption, thumbnail(full, out / "thumbs" / name, width), full))
        except DataError as exc:
            notes.append(f"left out: {exc}")
    return made


def build(run_dir: Path) -> tuple[Path, Path]:
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "thumbs", ignore_errors=True)  # ours: none of an earlier report's may linger
    cfg = read_config_tree(run_dir)
    run = load_run_dir(run_dir)
    history, evals, grids = run.history, read_evals(run_dir), sample_grids(run_dir)
    notes: list[str] = []
    blocks: list[tuple] = [("h1", f"Report: {run_dir.name}"),
                           ("facts", run_facts(run_dir, cfg, run.facts, history))]
    final = [[k, fmt(v)] for k, v in run.final.items() if not k.startswith("eval/acc_class_")]
    blocks.append(("table", ("Final metrics (last logged value; eval/: the newest eval/step_<N>.json)",
                             ["metric", "value"], final)) if final else ("p", "No metrics logged yet."))
    blocks.append(("details", ("Resolved config (config.yaml)", (run_dir / "config.yaml").read_text())))
    blocks.append(("h2", "Evaluation results"))
    tables = metrics_tables(evals)
    blocks += [("table", t) for t in tables] or [("p", "No evaluation results yet (eval/step_<N>.json); "
                                                       "run `python launch/evaluate.py RUN_DIR --metrics ...`.")]
    blocks.append(("h2", "Learning curves"))
    made, zero = figures(history, evals, out)
    blocks += [("img", (title, png)) for title, png in made] or [("p", "No metrics.jsonl rows to plot.")]
    if zero:
        blocks.append(("p", f"Left out, 0 at every logged step: {', '.join(f'`{k}`' for k in zero)}."))
    blocks.append(("h2", "Samples over time"))
    if grids:
        shown = evenly(grids, MOST_GRIDS)
        row = thumbs([(f"step {s}", p) for s, p in shown], out, THUMB_WIDTH, notes)
        blocks.append(("thumbs", row))
        blocks.append(("p", f"{len(shown)} of the {len(grids)} fixed-noise grids in samples/ "
                            f"({'evenly spaced, and the last; ' if len(shown) < len(grids) else ''}"
                            f"each links to its full-size file)."))
    else:
        blocks.append(("p", "No sample grids (samples/step_<N>.png) yet."))
    extra = family_figures(run_dir)
    if extra:
        blocks.append(("h2", "Evaluation figures"))
        blocks.append(("thumbs", thumbs([(f"{kind} (step {step})", png) for kind, (step, png) in extra.items()],
                                        out, FIGURE_WIDTH, notes)))
    blocks += [("p", note) for note in notes]
    return write(blocks, out, f"Report: {run_dir.name}")


# -- a sweep ----------------------------------------------------------------------------------------

def split(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def default_keys(manifest: dict) -> list[str]:
    """What a sweep without a saved table is grouped by: its swept keys but the seed (and the recipe)."""
    keys = [k for k in manifest.get("grid") or {} if k != "run.seed"]
    return (["recipe"] if len(manifest.get("recipes") or {}) > 1 else []) + keys


def counted(values: list[str]) -> str:
    """'a (3 runs), b (1 run)': each distinct value with how many runs have it."""
    counts = Counter(values)
    return ", ".join(f"{v} ({n} run{'s' if n > 1 else ''})" for v, n in counts.items())


def default_metrics(runs: list) -> list[str]:
    """The table's metrics without --metrics or a study's: the evaluation results (all final values if none)."""
    return [k for k in dict.fromkeys(k for r in runs for k in r.final)
            if k.startswith("eval/") and not is_count(k[5:]) and not k.startswith("eval/acc_class_")]


def sweep_facts(sweep_dir: Path, manifest: dict, runs: list, keys: list[str], how: str) -> list[tuple[str, str]]:
    """(label, value) rows of the facts block of a sweep: its manifest, and how its runs ran (run.json)."""
    statuses = Counter(str(r.get("status", "not recorded")) for r in manifest["runs"])
    recipes = manifest.get("recipes") or {}
    grid = manifest.get("grid") or {}
    rows = [("sweep dir", f"`{sweep_dir}`"), ("name", f"`{manifest.get('name', sweep_dir.name)}`"),
            ("recipes", "; ".join(f"`{shlex.join([r, *ov])}`" for r, ov in recipes.items()) or "?"),
            ("fixed overrides", f"`{shlex.join(manifest.get('fixed') or [])}`" if manifest.get("fixed") else "none"),
            ("grid", "; ".join(f"`{k}` = {', '.join(map(str, v))}" for k, v in grid.items()) or "none"),
            ("runs", f"{len(manifest['runs'])} in the grid: " + ", ".join(f"{n} {s}" for s, n in statuses.items())
             + f" (sweep.json); {len(runs)} with a run dir"),
            ("grouped by", (", ".join(f"`{k}`" for k in keys) or "nothing (all runs one group)") + f" ({how})")]
    if manifest.get("after"):
        rows.append(("after each run", "; ".join(f"`{c}`" for c in manifest["after"])))
    facts = [r.facts for r in runs if r.facts]
    if facts:
        seconds = [sessions_time(f)[0] for f in facts]
        rows += [("distgen commit", counted([f"`{f.get('commit') or 'unknown'}`"
                                             + (" with uncommitted changes" if f.get("commit_dirty") else "")
                                             for f in facts])),
                 ("how the runs ran", counted([f"mixed precision {f.get('mixed_precision', '?')}, world size "
                                               f"{f.get('world_size', '?')} on {f.get('machines', '?')} machine(s)"
                                               for f in facts])),
                 ("wall time", sweep_wall_time(manifest, seconds))]
    if len(facts) < len(runs):
        rows.append(("run.json", f"{len(runs) - len(facts)} run(s) without one (from before distgen recorded it)"))
    return rows


def sweep_wall_time(manifest: dict, sessions: list[float | None]) -> str:
    """The runs' process time as launch/sweep.py --local measured it (start-up included: launcher, imports,
    data), else their training sessions from run.json (which start once training has, e.g. SLURM tasks)."""
    measured = [r["seconds"] for r in manifest["runs"] if isinstance(r.get("seconds"), (int, float))]
    if measured:
        return (f"{duration(sum(measured))} summed over {len(measured)} runs' processes, start-up included "
                f"(sweep.json)")
    return (f"{duration(sum(s for s in sessions if s))} summed over the runs' training sessions (run.json; "
            f"start-up not recorded)" + (f" ({sessions.count(None)} without an end time not counted)"
                                         if None in sessions else ""))


def build_sweep(sweep_dir: Path, group_by: str = "", metrics: str = "") -> tuple[Path, Path]:
    manifest = grouping.read_sweep(sweep_dir)
    out = sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "thumbs", ignore_errors=True)
    dirs = grouping.expand_paths([str(sweep_dir)])  # the runs with a run dir on disk, in grid order
    entries = {r["dir"]: r for r in manifest["runs"]}
    runs = [load_run_dir(d, entries[d].get("id") or Path(d).name) for d in dirs]
    by_name = {r.name: (Path(d), entries[d]) for r, d in zip(runs, dirs)}
    spec = manifest.get("table") or {}
    if group_by:
        keys, how = split(group_by), "--group-by"
    elif spec.get("group_by"):
        keys, how = list(spec["group_by"]), "the study's table"
    else:
        keys, how = default_keys(manifest), "the swept keys but run.seed"
    wanted = split(metrics) or list(spec.get("metrics") or []) or default_metrics(runs)
    groups, columns, shown, table = grouping.grouped(runs, keys, wanted)
    head, body = grouping.cells(table, columns, shown)
    notes: list[str] = []
    blocks: list[tuple] = [("h1", f"Sweep report: {manifest.get('name', sweep_dir.name)}"),
                           ("facts", sweep_facts(sweep_dir, manifest, runs, keys, how)),
                           ("h2", "Final metrics by group"),
                           ("table", (f"mean ± std over each group's runs (n); {len(runs)} runs in "
                                      f"{len(groups)} groups", head, body))]
    blocks.append(("h2", "Learning curves (each group's mean, ± one std)"))
    curves = grouping.plot_group_curves(groups, out / "curves.png")
    blocks.append(("img", ("Learning curves by group", curves)) if curves else ("p", "No metrics.jsonl rows to plot."))
    blocks.append(("h2", "Samples, one grid per group"))
    picks = []
    for group in groups[:MOST_GROUPS]:
        finished_first = sorted(group.runs, key=lambda r: by_name[r.name][1].get("status") != "finished")  # stable
        newest = [(r.name, grids[-1]) for r in finished_first if (grids := sample_grids(by_name[r.name][0]))]
        if newest:
            name, (step, path) = newest[0]
            picks.append((f"{grouping.label(group)}: {name}, step {step}", path))
        else:
            notes.append(f"group {grouping.label(group)}: no sample grid yet")
    if picks:
        blocks.append(("thumbs", thumbs(picks, out, THUMB_WIDTH, notes)))
    if len(groups) > MOST_GROUPS:
        notes.append(f"grids of the first {MOST_GROUPS} of {len(groups)} groups shown")
    blocks += [("p", note) for note in notes]
    blocks.append(("h2", "Runs"))
    run_rows = []
    for entry in manifest["runs"]:
        run_dir = Path(entry["dir"])
        on_disk = (run_dir / "config.yaml").is_file()
        facts, history = (read_facts(run_dir), read_history(run_dir)) if on_disk else ({}, [])
        page = run_dir / "report" / "index.html"
        run_rows.append([entry.get("id", run_dir.name), str(entry.get("status", "?")),
                         ending(facts, history[-1]["step"] if history else 0, entry.get("steps", "?"))
                         if facts else ("no run.json" if on_disk else "no run dir yet"),
                         str(history[-1]["step"]) if history else "",
                         (("report", page) if page.is_file() else
                          f"none yet: python launch/report.py {run_dir}" if on_disk else "")])
    blocks.append(("table", ("Each run (a report link where `launch/report.py RUN_DIR` made one)",
                             ["run", "status (sweep.json)", "how it ended (run.json)", "last step", "report"],
                             run_rows)))
    return write(blocks, out, f"Sweep report: {manifest.get('name', sweep_dir.name)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="a run dir (with config.yaml) or a sweep dir (with sweep.json)")
    parser.add_argument("--group-by", default="", help="sweep dir: KEY[,KEY] to group its runs by")
    parser.add_argument("--metrics", default="", help="sweep dir: these final metrics only (comma-separated)")
    args = parser.parse_args(argv)
    path = Path(args.dir)
    try:
        if (path / grouping.MANIFEST).is_file():
            md, page = build_sweep(path, args.group_by, args.metrics)
        elif (path / "config.yaml").is_file():
            if args.group_by or args.metrics:
                raise ConfigError(f"--group-by and --metrics are for a sweep dir; '{path}' is a run dir")
            md, page = build(path)
        else:
            raise ConfigError(f"'{path}' is neither a run dir (no config.yaml) nor a sweep dir (no "
                              f"{grouping.MANIFEST}); pass the folder train.py or sweep.py printed")
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {md}\nreport: {page} ({page.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
