"""Sweeps: a grid of overrides (and recipes) expanded into ordinary runs, with a manifest on disk.

    python launch/sweep.py recipes/dcgan_digits_smoke.yaml optim.lr_d=1e-4,2e-4 run.seed=0,1,2 --local
    python launch/sweep.py studies/dann.yaml --local

What launch/sweep.py, launch/sweep_task.py (one SLURM array task) and launch/compare.py share:
parsing `key=a,b,c` (each value YAML, as train.py's overrides; `[1, 2]` stays one value), the grid's
expansion into runs with short readable ids, validation of every run with the recipe loader before
anything starts, the manifest RUN_ROOT/<name>/sweep.json and whether a run is finished. No torch import.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from distgen.errors import ConfigError

from distgen.recipes import load as load_recipe

MANIFEST = "sweep.json"
RECIPE_KEY = "recipe"  # the grid axis over recipe files (config's own `recipe` is the file's stem)
MAX_ID = 80  # characters of a run id (a folder name) before it is shortened with a hash


@dataclass
class Sweep:
    """recipes (path -> its own fixed overrides), fixed overrides for every run, swept axes."""
    name: str
    recipes: dict[str, list[str]]
    fixed: list[str] = field(default_factory=list)
    axes: dict[str, list[str]] = field(default_factory=dict)  # key -> override texts, in order
    table: dict = field(default_factory=dict)  # studies: {group_by: [...], metrics: [...]} for compare
    after: list[str] = field(default_factory=list)  # studies: commands run on each finished run ({dir})


def split_values(text: str) -> list[str]:
    """'1e-4,2e-4' -> ['1e-4', '2e-4']; commas inside [], {} or quotes do not split: '[1, 2],[3]'."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    values.append(text[start:])
    return [v.strip() for v in values]


def value_text(value) -> str:
    """A YAML value of a study file as override text (what the user would have typed)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)  # JSON is YAML flow style
    return str(value)


def parse_grid(items: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Command-line `key=a,b` items -> (fixed overrides, swept axes). A key with one value is fixed."""
    fixed, axes = [], {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"sweep item '{item}' must look like key=a,b,c (e.g. optim.lr_d=1e-4,2e-4)")
        values = split_values(text)
        if key in axes or (len(values) > 1 and any(f.partition("=")[0] == key for f in fixed)):
            # (a fixed key given twice is fine: the later value wins, as with train.py's overrides)
            raise ConfigError(f"key '{key}' is given twice; give all its values once: {key}=a,b,c")
        if len(values) != len(set(values)):
            raise ConfigError(f"'{item}' repeats a value")
        if len(values) == 1:
            fixed.append(f"{key}={values[0]}")
        else:
            axes[key] = values
    # The sweep's identity (its default name, the run ids, the check of a rerun) must not depend on the
    # order the grid's arguments were typed in: the axes in key order (each axis keeps its value order)
    return fixed, dict(sorted(axes.items()))


def load_study(path: str | Path) -> Sweep:
    """A sweep saved as a file (studies/*.yaml): recipe(s), fixed overrides, grid, the table to print.

        name: dann_digits
        recipe: recipes/dann_digits.yaml          # or a list, or {path: [its own overrides], ...}
        overrides: [train.steps=3000]
        grid: {model.mode: [source_only, dann, target_only], run.seed: [0, 1, 2]}
        table: {group_by: [model.mode], metrics: [eval/target_acc]}
        after: ["launch/evaluate.py {dir} --metrics judge_fid"]   # run with this python on each finished run
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"study '{path}' is not valid YAML: {exc}") from None
    known = {"name", "recipe", "overrides", "grid", "table", "after"}
    if not isinstance(raw, dict) or "recipe" not in raw or set(raw) - known:
        extra = sorted(set(raw) - known) if isinstance(raw, dict) else []
        raise ConfigError(f"study '{path}' must be a mapping with 'recipe' and optional name, overrides, grid, "
                          f"table, after{f'; unknown key {extra[0]!r}' if extra else ''}")
    recipes = raw["recipe"]
    if isinstance(recipes, str):
        recipes = {recipes: []}
    elif isinstance(recipes, list):
        recipes = {r: [] for r in recipes}
    if not isinstance(recipes, dict):
        raise ConfigError(f"study '{path}': 'recipe' must be a path, a list of paths or a mapping path -> overrides")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"study '{path}': 'grid' must map keys to non-empty lists of values")
    fixed = [str(o) for o in raw.get("overrides") or []]
    axes = {k: [value_text(v) for v in values] for k, values in grid.items() if len(values) > 1}
    fixed += [f"{k}={value_text(values[0])}" for k, values in grid.items() if len(values) == 1]
    table = raw.get("table") or {}
    if not isinstance(table, dict) or set(table) - {"group_by", "metrics"}:
        raise ConfigError(f"study '{path}': 'table' takes group_by: [keys] and metrics: [names]")
    after = raw.get("after") or []
    if not isinstance(after, list) or not all(isinstance(c, str) and "{dir}" in c for c in after):
        raise ConfigError(f"study '{path}': 'after' must be a list of commands with {{dir}}, "
                          f"e.g. 'launch/evaluate.py {{dir}} --metrics judge_fid'")
    return Sweep(str(raw.get("name") or path.stem), {str(r): [str(o) for o in (ov or [])] for r, ov in recipes.items()},
                 fixed, axes, table, after)


def default_name(recipes: list[str], axes: dict[str, list[str]]) -> str:
    """The same command gives the same name (so rerunning it resumes): recipe stem(s) + swept keys."""
    stems = "+".join(Path(r).stem for r in recipes) if len(recipes) <= 2 else f"{len(recipes)}recipes"
    keys = "-".join(short_keys(list(axes)).values())
    return safe(f"{stems}__{keys}" if keys else stems)


def safe(text: str) -> str:
    """Filesystem-safe and bounded: other characters -> '_', long names shortened with a hash."""
    text = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text).strip("._") or "run"
    if len(text) > MAX_ID:
        text = text[:MAX_ID - 9] + "~" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return text


def short_keys(keys: list[str]) -> dict[str, str]:
    """optim.lr_d -> lr_d, run.seed -> seed; the full key where two would read the same."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def id_text(value: str) -> str:
    """A value as it reads in a run id: a list [8, 16] -> 8-16 (commas separate the keys there)."""
    return re.sub(r"[\[\]{}\s'\"]", "", value).replace(",", "-")


def expand(sweep: Sweep) -> list[dict]:
    """Every combination of the axes (and recipes), in grid order: {id, recipe, overrides, values}."""
    recipes = list(sweep.recipes)
    axes = ({RECIPE_KEY: recipes} if len(recipes) > 1 else {}) | sweep.axes
    names = short_keys(list(axes))
    runs = []
    for combo in itertools.product(*axes.values()) if axes else [()]:
        values = dict(zip(axes, combo))
        recipe = values.get(RECIPE_KEY, recipes[0])
        shown = {k: (Path(v).stem if k == RECIPE_KEY else v) for k, v in values.items()}
        run_id = safe(",".join(f"{names[k]}={id_text(v)}" for k, v in shown.items()) or "run")
        overrides = [*sweep.fixed, *sweep.recipes[recipe], *(f"{k}={v}" for k, v in values.items() if k != RECIPE_KEY)]
        runs.append({"id": run_id, "recipe": recipe, "overrides": overrides, "values": shown})
    ids = [r["id"] for r in runs]
    for i, run in enumerate(runs):  # values that differ only in unsafe characters could collide
        if ids.count(run["id"]) > 1:
            run["id"] = safe(f"{run['id']}~{i}")
    return runs


def group_overrides(sweep: Sweep) -> list[str]:
    """What each run records for a comparison of its W&B group (launch/compare.py --wandb --group):
    log.wandb.group_by = the study's table's group_by, else the swept keys other than run.seed (the
    recipe axis is the config key `recipe`); log.wandb.group_metrics = the table's metrics. Nothing for
    a sweep over seeds only."""
    keys = sweep.table.get("group_by") or [k for k in ([RECIPE_KEY] if len(sweep.recipes) > 1 else [])
                                          + list(sweep.axes) if k != "run.seed"]
    metrics = sweep.table.get("metrics") or []
    return ([f"log.wandb.group_by={json.dumps(list(keys))}"] if keys else []) + \
        ([f"log.wandb.group_metrics={json.dumps(list(metrics))}"] if metrics else [])


def validate(sweep: Sweep, runs: list[dict], root: Path) -> None:
    """Load every run's config (all of them, before anything starts) and fill in run dir and steps."""
    grouping = group_overrides(sweep)
    for run in runs:
        run_dir = root / sweep.name / run["id"]
        run["overrides"] = [*run["overrides"], f"run.dir={run_dir}", f"log.wandb.group={sweep.name}", *grouping]
        try:
            cfg = load_recipe(run["recipe"], run["overrides"])
        except ConfigError as exc:
            combo = ", ".join(f"{k}={v}" for k, v in run["values"].items()) or run["recipe"]
            raise ConfigError(f"sweep run [{combo}]: {exc}") from None
        run["dir"], run["steps"] = str(run_dir), cfg.train.steps


def checkpoint_step(run_dir: str | Path) -> int:
    """The step of a run's latest checkpoint (0 without one)."""
    try:
        return int(json.loads((Path(run_dir) / "checkpoints" / "latest" / "meta.json").read_text()).get("step", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def state(run: dict) -> str:
    """finished (its latest checkpoint is at train.steps), interrupted (an earlier one), or pending.

    The loops save a checkpoint at the last step, so a run whose metrics reached train.steps without
    that checkpoint was cut short between the two and is resumed, not counted."""
    step = checkpoint_step(run["dir"])
    return "finished" if step >= run["steps"] else "interrupted" if step else "pending"


def manifest_path(root: Path, name: str) -> Path:
    return root / name / MANIFEST


def write_manifest(sweep: Sweep, runs: list[dict], root: Path, extra: dict | None = None) -> Path:
    """sweep.json: name, recipes, fixed overrides, grid, table, and each run's id, overrides, dir, status."""
    path = manifest_path(root, sweep.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"name": sweep.name, "recipes": sweep.recipes, "fixed": sweep.fixed, "grid": sweep.axes,
            "table": sweep.table, "after": sweep.after, **(extra or {}), "runs": runs}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # a reader never sees half a manifest
    return path


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        return json.loads(path.read_text())
    except OSError:
        raise ConfigError(f"'{path}' does not exist: pass a sweep dir (runs/sweeps/<name>) with a {MANIFEST}") from None
    except ValueError as exc:
        raise ConfigError(f"'{path}' is not JSON ({exc}); rerun launch/sweep.py to rewrite it") from None


def after_commands(after: list[str], run: dict, python: str) -> list[list[str]]:
    """A study's `after` commands for one run: `{dir}` -> its run dir, scripts run with `python`."""
    return [[python, *(part.replace("{dir}", run["dir"]) for part in shlex.split(cmd))] for cmd in after]


AFTER_DONE = "sweep_after.done"  # in a run dir: the study's `after` commands succeeded on it


def after_done(after: list[str], run: dict) -> bool:
    return not after or (Path(run["dir"]) / AFTER_DONE).is_file()


def mark_after_done(after: list[str], run: dict) -> None:
    if after:
        (Path(run["dir"]) / AFTER_DONE).write_text("\n".join(after) + "\n")


def check_same(sweep: Sweep, old: dict) -> None:
    """A rerun must be the same sweep: a different grid under the same name would mix two experiments."""
    for key, mine in (("recipes", sweep.recipes), ("fixed", sweep.fixed), ("grid", sweep.axes)):
        if key == "fixed" and same_fixed(old.get(key) or [], mine):
            continue
        if old.get(key) != mine:
            raise ConfigError(f"sweep '{sweep.name}' exists with other {key} ({old.get(key)!r}, now {mine!r}); "
                              f"give it another --name, or rerun the same command to continue it")


def same_fixed(old: list[str], new: list[str]) -> bool:
    """The same fixed overrides in another order: each key's last value (the one that wins) is the same."""
    def last(items: list[str]) -> dict:
        return {k: v for k, _, v in (i.partition("=") for i in items)}

    return last(old) == last(new)


def first_error(log: str) -> str:
    """The line that says why a run failed, from the output of its attempt: train.py's one-line `error: ...`,
    else the exception line that ends a traceback, else the last line written."""
    lines = [line.rstrip() for line in log.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error: "):
            return line[len("error: "):]
    if "Traceback (most recent call last):" in lines:
        after = lines[len(lines) - lines[::-1].index("Traceback (most recent call last):"):]
        ends = [line for line in after if not line.startswith((" ", "\t"))]
        if ends:
            return ends[-1]
    return lines[-1] if lines else "no output"
