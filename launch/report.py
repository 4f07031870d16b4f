"""Write a run's report: report/index.md and report/index.html with learning curves, sample grids, metrics.

    python launch/report.py RUN_DIR

Figures (matplotlib PNGs in RUN_DIR/report/, drawn from what the run logged):
  curves_losses.png     the loss terms, one panel per net (D/..., G/..., or the family's own names)
  curves_d_outputs.png  D(x) and D(G(z)), when the family reports them
  curves_accuracy.png   accuracies logged during training (D/acc_real, G/acc_fake, acc, ...)
  curves_eval.png       evaluation results over steps (metrics.jsonl eval/... rows and eval/step_<N>.json)
  curves_speed.png      img/s
  samples_over_time.png the fixed-noise grids samples/step_<N>.png side by side
Evaluation figures: the newest eval/<kind>_step_<N>.png of each kind (evaluate.py's grid, a VAE's
reconstructions and t-SNE, DANN's t-SNE by class and domain, ...). The metrics table lists
eval/step_<N>.json. The first paragraph says how the run ran (run.json: mixed precision, world size,
machines, workers, commit, how it ended). index.html embeds every image, so it is one portable file.
"""
from __future__ import annotations

import argparse
import base64
import html
import os
import re
import sys
from pathlib import Path

import yaml

from distgen.errors import ConfigError, DataError
from distgen.evaluation.plots import image_strip, plot_panels, series
from distgen.evaluation.runs import (describe, is_number, read_evals, read_facts, read_history, require_run_dir,
                                     sample_grids)

COUNTS = ("num_samples", "num_reference", "kid_subset_size")  # bookkeeping, not curves


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


def figures(history: list[dict], evals: dict[int, dict], out: Path) -> list[tuple[str, Path]]:
    """(title, png) of every learning-curve figure this run's logs can fill."""
    eval_rows = [{"step": s, **{f"eval/{k}": v for k, v in r.items() if k != "step"}} for s, r in evals.items()]
    rows = history + eval_rows
    keys = list(dict.fromkeys(k for row in rows for k, v in row.items() if k != "step" and is_number(v)))
    keys = [k for k in keys if not (k.startswith("eval/") and (k[5:] in COUNTS or k.startswith("eval/acc_class_")))]
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
    if eval_keys:  # one panel per metric: FID and accuracy do not share a scale
        made.append(("Evaluation", plot_panels([(k[5:], {k: series(rows, k)}) for k in eval_keys],
                                               out / "curves_eval.png")))
    return made


def family_figures(run_dir: Path) -> dict[str, tuple[int, Path]]:
    """kind -> (step, path) of the newest eval/<kind>_step_<N>.png of every kind."""
    newest: dict[str, tuple[int, Path]] = {}
    for path in (run_dir / "eval").glob("*_step_*.png"):
        match = re.fullmatch(r"(.+)_step_(\d+)\.png", path.name)
        if match and int(match.group(2)) >= newest.get(match.group(1), (-1, None))[0]:
            newest[match.group(1)] = (int(match.group(2)), path)
    return dict(sorted(newest.items()))


def metrics_tables(evals: dict[int, dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the eval results: main metrics, and per-class accuracy if present."""
    def fmt(v):
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    tables = []
    for title, wanted in (("Evaluation results (eval/step_<N>.json)", lambda k: not k.startswith("acc_class_")),
                          ("Accuracy per class", lambda k: k.startswith("acc_class_"))):
        cols = list(dict.fromkeys(k for r in evals.values() for k, v in r.items()
                                  if k != "step" and is_number(v) and wanted(k)))
        if cols:
            rows = [[str(s)] + [fmt(r[c]) if c in r else "" for c in cols] for s, r in evals.items()]
            tables.append((title, ["step"] + cols, rows))
    return tables


def build(run_dir: Path) -> tuple[Path, Path]:
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    history, evals, grids = read_history(run_dir), read_evals(run_dir), sample_grids(run_dir)
    last = history[-1]["step"] if history else 0
    blocks: list[tuple] = [("h1", f"Report: {run_dir.name}"),
                           ("p", f"recipe `{cfg.get('recipe', '')}`, family `{cfg.get('family', '')}`, "
                                 f"last logged step {last} of {cfg.get('train', {}).get('steps', '?')}; "
                                 f"run dir `{run_dir}`"),
                           ("p", f"How it ran (run.json): {describe(read_facts(run_dir))}")]
    blocks.append(("h2", "Metrics"))
    tables = metrics_tables(evals)
    blocks += [("table", t) for t in tables] or [("p", "No evaluation results yet (eval/step_<N>.json); "
                                                       "run `python launch/evaluate.py RUN_DIR --metrics ...`.")]
    blocks.append(("h2", "Learning curves"))
    made = figures(history, evals, out)
    blocks += [("img", (title, png)) for title, png in made] or [("p", "No metrics.jsonl rows to plot.")]
    blocks.append(("h2", "Samples over time"))
    if grids:
        strip = image_strip([(f"step {s}", p) for s, p in grids], out / "samples_over_time.png")
        blocks.append(("img", ("Fixed-noise grids over training", strip)))
        blocks += [("img", (f"step {s}", p)) for s, p in grids]
    else:
        blocks.append(("p", "No sample grids (samples/step_<N>.png) yet."))
    extra = family_figures(run_dir)
    if extra:
        blocks.append(("h2", "Evaluation figures"))
        blocks += [("img", (f"{kind} (step {step})", png)) for kind, (step, png) in extra.items()]
    md, page = out / "index.md", out / "index.html"
    md.write_text(to_markdown(blocks, out))
    page.write_text(to_html(blocks, f"Report: {run_dir.name}"))
    return md, page


def to_markdown(blocks, base: Path) -> str:
    lines = []
    for kind, value in blocks:
        if kind == "h1":
            lines += [f"# {value}", ""]
        elif kind == "h2":
            lines += [f"## {value}", ""]
        elif kind == "p":
            lines += [value, ""]
        elif kind == "table":
            title, header, rows = value
            lines += [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
        elif kind == "img":
            title, png = value
            lines += [f"![{title}]({Path(os.path.relpath(png, base)).as_posix()})", ""]  # grids: ../samples/
    return "\n".join(lines)


def to_html(blocks, title: str) -> str:
    def embed(png: Path) -> str:
        return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()

    body = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{html.escape(value).replace('`', '')}</{kind}>")
        elif kind == "table":
            name, header, rows = value
            cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<p><b>{html.escape(name)}</b></p><table><tr>{cells}</tr>{trs}</table>")
        elif kind == "img":
            caption, png = value
            body.append(f'<figure><img src="{embed(png)}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    args = parser.parse_args(argv)
    try:
        md, page = build(require_run_dir(args.run_dir))
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {md}\nreport: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
