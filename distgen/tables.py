"""Tables across runs, in Markdown. `dann_table`: the reports' domain-adaptation table.

    python launch/dann_table.py runs/dann_digits/* runs/dann_mnistm_usps/*

Rows: source-only, DANN, target-only (each run's `model.mode`); columns: scenarios, named
"source -> target" after the folders of the run's data.source (or data.root) and data.target;
cells: target test accuracy (%) at the run's last evaluation (no checkpoint is picked by target
labels). The DANN row also gives the gain over source-only. A cell of several runs shows their
mean and how many.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from distgen.errors import ConfigError

ROWS = (("source_only", "source-only"), ("dann", "DANN"), ("target_only", "target-only"))


def last_eval(run_dir: Path, key: str) -> tuple[int, float]:
    """(step, value) of `key` in the run's latest eval/step_<N>.json that has it."""
    found = []
    for path in (run_dir / "eval").glob("step_*.json"):
        result = json.loads(path.read_text())
        if key in result:
            found.append((int(result["step"]), float(result[key])))
    if not found:
        raise ConfigError(f"'{run_dir}' has no eval/step_<N>.json with '{key}'; has the run finished?")
    return max(found)


def dann_run(run_dir: str | Path) -> tuple[str, str, float]:
    """(scenario, mode, target accuracy in %) of one dann run dir."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"'{run_dir}' is not a run dir (no config.yaml)")
    cfg = yaml.safe_load(cfg_path.read_text())
    if cfg.get("family") != "dann":
        raise ConfigError(f"'{run_dir}' is a '{cfg.get('family')}' run; the table needs dann runs")
    data = cfg["data"]
    scenario = f"{Path(data.get('source') or data['root']).name} → {Path(data['target']).name}"
    return scenario, cfg["model"]["mode"], 100.0 * last_eval(run_dir, "target_acc")[1]


def dann_table(run_dirs) -> str:
    """Markdown table: rows source-only / DANN / target-only, one column per scenario."""
    cells: dict[tuple[str, str], list[float]] = {}
    scenarios: list[str] = []
    for run_dir in run_dirs:
        scenario, mode, acc = dann_run(run_dir)
        cells.setdefault((mode, scenario), []).append(acc)
        if scenario not in scenarios:
            scenarios.append(scenario)
    if not scenarios:
        raise ConfigError("no run dirs given; pass the dann runs to tabulate")

    def mean(mode, scenario):
        values = cells.get((mode, scenario))
        return sum(values) / len(values) if values else None

    lines = ["| target accuracy (%) | " + " | ".join(scenarios) + " |", "|---" * (len(scenarios) + 1) + "|"]
    for mode, title in ROWS:
        row = []
        for scenario in scenarios:
            acc, n = mean(mode, scenario), len(cells.get((mode, scenario), []))
            if acc is None:
                row.append("–")
                continue
            text = f"{acc:.1f}"
            base = mean("source_only", scenario)
            if mode == "dann" and base is not None:
                text += f" ({acc - base:+.1f})"
            row.append(text + (f" (mean of {n})" if n > 1 else ""))
        lines.append(f"| {title} | " + " | ".join(row) + " |")
    return "\n".join(lines)
