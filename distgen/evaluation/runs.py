"""Reading what a training run left in its run dir: flat config, run.json facts, learning-curve history, eval results.

Used by launch/report.py and launch/compare.py; no torch import, so both start quickly.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from distgen.errors import ConfigError, DataError


@dataclass
class RunData:
    """One run, from a run dir or from W&B: flat config, history rows, final values."""
    name: str
    config: dict = field(default_factory=dict)  # dotted keys -> values
    history: list[dict] = field(default_factory=list)  # rows with "step" and named values
    final: dict = field(default_factory=dict)  # metric -> last value
    facts: dict = field(default_factory=dict)  # run.json: how it ran (precision, world size, commit, ...)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"optim": {"lr_d": 1e-4}} -> {"optim.lr_d": 1e-4}; lists stay values."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"'{run_dir}' is not a run dir (no config.yaml); pass the folder train.py printed")
    return run_dir


def read_config_tree(run_dir: Path) -> dict:
    """config.yaml as saved by the run (the resolved config, nested)."""
    path = run_dir / "config.yaml"
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(tree, dict):
        raise DataError(f"{path}: not a mapping of config sections")
    return tree


def read_config(run_dir: Path) -> dict:
    return flatten(read_config_tree(run_dir))


def read_history(run_dir: Path) -> list[dict]:
    """metrics.jsonl rows (one JSON object per log step, each with "step"); [] if there is none.

    A last line without its newline that is not JSON was cut by a kill: it is left out (the next
    resume drops it from the file too); any other bad line is an error naming it."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines):  # the last line, without a newline: cut mid-write
                break
            raise DataError(f"{path}, line {n}: not JSON ({exc.msg})") from None
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


FACTS = ("mixed_precision", "world_size", "machines", "num_workers", "commit", "commit_dirty", "status",
         "stopped_early", "why")  # run.json facts that tell runs apart (not host, times or command line)


def read_facts(run_dir: Path) -> dict:
    """run.json (written by the training loops since it exists; {} for older runs)."""
    path = run_dir / "run.json"
    if not path.is_file():
        return {}
    try:
        facts = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not JSON ({exc.msg})") from None
    return facts if isinstance(facts, dict) else {}


def describe(facts: dict) -> str:
    """One line about how a run ran, from its run.json."""
    if not facts:
        return "no run.json (a run from before distgen recorded it)"
    commit = facts.get("commit")
    parts = [f"mixed precision {facts.get('mixed_precision', '?')}",
             f"world size {facts.get('world_size', '?')} on {facts.get('machines', '?')} machine(s)",
             f"data.num_workers {facts.get('num_workers', '?')}",
             f"commit {commit[:12] if commit else 'unknown'}{' (uncommitted changes)' if facts.get('commit_dirty') else ''}",
             f"host {facts.get('host', '?')}", f"{facts.get('status', '?')}"]
    if facts.get("why"):
        parts[-1] += f" ({facts['why']})"
    if facts.get("started"):
        parts.append(f"started {facts['started']}, ended {facts.get('ended') or 'not recorded'}")
    return ", ".join(parts)


def read_evals(run_dir: Path) -> dict[int, dict]:
    """step -> the flat results of eval/step_<N>.json, in step order."""
    found = {}
    for path in (run_dir / "eval").glob("step_*.json"):
        match = re.fullmatch(r"step_(\d+)\.json", path.name)
        if match:
            try:
                found[int(match.group(1))] = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: not JSON ({exc.msg})") from None
    return dict(sorted(found.items()))


def sample_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of samples/step_<N>.png, in step order."""
    grids = []
    for path in (run_dir / "samples").glob("step_*.png"):
        match = re.fullmatch(r"step_(\d+)\.png", path.name)
        if match:
            grids.append((int(match.group(1)), path))
    return sorted(grids)


def numeric_keys(rows: list[dict]) -> list[str]:
    """Every key with a number in some row (not "step"), in order of first appearance."""
    return list(dict.fromkeys(k for row in rows for k, v in row.items() if k != "step" and is_number(v)))


def zero_throughout(rows: list[dict], key: str) -> bool:
    """Whether every number logged under `key` is 0 (a curve not worth a panel, e.g. nonfinite_skipped)."""
    return all(row[key] == 0 for row in rows if is_number(row.get(key)))


def last_values(history: list[dict]) -> dict:
    """The last logged number of every key (rows may carry different keys, e.g. eval/ rows)."""
    out = {}
    for row in history:
        out.update({k: v for k, v in row.items() if k != "step" and is_number(v)})
    return out


def load_run_dir(run_dir: str | Path, name: str = "") -> RunData:
    """A local run: final = last logged values, overridden by the newest eval/step_<N>.json as eval/<key>."""
    run_dir = require_run_dir(run_dir)
    history = read_history(run_dir)
    final = last_values(history)
    evals = read_evals(run_dir)
    if evals:
        newest = evals[max(evals)]
        final.update({f"eval/{k}": v for k, v in newest.items() if k != "step" and is_number(v)})
    facts = read_facts(run_dir)
    config = {**read_config(run_dir), **{f"run.json/{k}": facts[k] for k in FACTS if k in facts}}
    return RunData(name or str(run_dir), config, history, final, facts)


def short_names(paths: list[str]) -> list[str]:
    """The shortest distinct trailing path parts: runs/a/x, runs/b/x -> a/x, b/x."""
    parts = [Path(p).resolve().parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]
