"""Run a grid of settings and seeds as ordinary runs: one after another, K at a time, or as a SLURM array.

    python launch/sweep.py RECIPE key=a,b,c other.key=x,y run.seed=0,1,2 [--name NAME]
        [--local [--parallel K] | --slurm [submit.py options] [--max-concurrent M]] [--dry-run]
    python launch/sweep.py studies/dann.yaml --local           # a sweep saved as a file
    python launch/compare.py runs/sweeps/NAME --group-by model.mode
    python launch/report.py runs/sweeps/NAME                   # one HTML page: table, curves, a grid per group

Values are parsed as YAML like train.py's overrides (`[1, 2]` stays one value); RECIPE may be a
comma-separated list of recipes (an axis of its own). Every combination's config, and the shards it
reads, are checked before anything starts. The grid's keys are ordered by name, so the order they are
typed in changes nothing. Each run's dir is runs/sweeps/<name>/<id> (id: the swept values, e.g.
`lr_d=1e-4,seed=0`), its W&B group the sweep name; runs/sweeps/<name>/sweep.json lists the grid and
every run's overrides, status, process seconds (start-up included) and, for a failed run, its first
error line, which the summary prints with the run's log. The name defaults to the recipe and swept
keys, so rerunning the same command continues the sweep: finished runs are skipped, interrupted ones
resume from their last checkpoint.

--local runs launch/train.py under `accelerate launch` (your accelerate config; `--launch-args`
adds flags) or plain python (`--launcher python`), logs in runs/sweeps/<name>/logs/<id>.log;
`--parallel K --gpus-per-run G` gives each of the K runs at a time its own G GPUs.
--slurm renders launch/slurm/train.sbatch through launch/submit.py as one job array
(`#SBATCH --array=0-<N-1>%<M>`), each task one run (launch/sweep_task.py picks it from sweep.json by
$SLURM_ARRAY_TASK_ID), requeued and resumed per task like a single job. --dry-run prints the plan
(or the array script) and writes nothing.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import submit  # launch/submit.py (this script's folder is on sys.path): the array job is its job
from distgen import plugins
from distgen import sweep as sw
from distgen.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


def repo_path(path: str | Path) -> str:
    """Paths in the manifest relative to the repository (runs start there, also on a SLURM node)."""
    full = Path(path).resolve()
    return os.path.relpath(full, ROOT) if full.is_relative_to(ROOT) else str(full)


def build(args) -> tuple[sw.Sweep, list[dict], Path]:
    if args.target.endswith((".yaml", ".yml")) and Path(args.target).is_file() and _is_study(args.target):
        sweep = sw.load_study(args.target)
        extra_fixed, extra_axes = sw.parse_grid(args.grid)  # command-line additions to a study
        sweep.fixed += extra_fixed
        for key in (f.partition("=")[0] for f in extra_fixed):  # e.g. run.seed=0: one seed of the study
            sweep.axes.pop(key, None)
        sweep.axes |= extra_axes
        sweep.recipes = {str(ROOT / r): ov for r, ov in sweep.recipes.items()}  # a study's paths: from the repo
    else:
        fixed, axes = sw.parse_grid(args.grid)
        recipes = sw.split_values(args.target)
        sweep = sw.Sweep("", {r: [] for r in recipes}, fixed, axes)
    sweep.recipes = {repo_path(r): ov for r, ov in sweep.recipes.items()}
    for recipe in sweep.recipes:
        if not (ROOT / recipe).is_file():
            raise ConfigError(f"recipe file '{recipe}' does not exist; recipes live in recipes/*.yaml")
    sweep.name = sw.safe(args.name) if args.name else (sweep.name or sw.default_name(list(sweep.recipes), sweep.axes))
    root = Path(repo_path(args.root))
    runs = sw.expand(sweep)
    plugins.also_search(os.getcwd())  # a plug-in family next to the caller is found from the repo too
    os.chdir(ROOT)
    sw.validate(sweep, runs, root)
    # the runs (and a SLURM array's tasks) start in the repository: give them the plug-in families' folders
    os.environ["PYTHONPATH"] = plugins.pythonpath(os.environ.get("PYTHONPATH"))
    return sweep, runs, root


def check_data(runs: list[dict]) -> None:
    """Every unfinished run's shards, as training's start checks them, before any run starts: a wrong
    data.root would otherwise fail every run of the grid in turn. One error: the first bad run, and how
    many share the problem."""
    from distgen import recipes
    from distgen.data import check

    bad = []
    for run in runs:
        if sw.state(run) == "finished":
            continue
        cfg = recipes.load(run["recipe"], run["overrides"])
        try:
            check.check(cfg, recipes.family_class(cfg.family))
        except (ConfigError, DataError) as exc:
            bad.append((run, exc))
    if bad:
        run, exc = bad[0]
        combo = ", ".join(f"{k}={v}" for k, v in run["values"].items()) or run["recipe"]
        more = f" ({len(bad)} of the {len(runs)} runs have bad data)" if len(bad) > 1 else ""
        raise DataError(f"sweep run [{combo}]: {exc}{more}; nothing was started")


def _is_study(path: str) -> bool:
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError:
        return False
    return isinstance(raw, dict) and "family" not in raw and "recipe" in raw


def free_port() -> int:
    """A port nobody listens on now: runs started side by side must not share a rendezvous port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launcher_cmd(args) -> list[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # this venv's first
    accelerate = shutil.which("accelerate", path=path)
    if args.launcher == "accelerate" or (args.launcher == "auto" and accelerate):
        if not accelerate:
            raise ConfigError("--launcher accelerate: no `accelerate` next to this python or on PATH")
        return [accelerate, "launch", *shlex.split(args.launch_args)]
    return [sys.executable]


def run_after(sweep: sw.Sweep, run: dict, logs: Path) -> bool:
    """A study's `after` commands (evaluation) on a finished run, into its log; False if one failed."""
    with open(logs / f"{run['id']}.log", "a") as log:
        for cmd in sw.after_commands(sweep.after, run, sys.executable):
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            if subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                return False
    sw.mark_after_done(sweep.after, run)
    return True


def run_local(sweep: sw.Sweep, runs: list[dict], root: Path, args) -> int:
    """Every unfinished run, `--parallel` at a time; the manifest is rewritten at every change."""
    base = launcher_cmd(args)
    logs = root / sweep.name / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    todo, failed = [], []
    began = time.time()
    for i, run in enumerate(runs):
        run["status"] = sw.state(run)
        if run["status"] != "finished":
            todo.append(i)
        elif not sw.after_done(sweep.after, run):  # trained, not yet evaluated
            print(f"[{i + 1}/{len(runs)}] {run['id']}: finished; running the study's `after` commands", flush=True)
            log = logs / f"{run['id']}.log"
            offset = log.stat().st_size if log.is_file() else 0
            if not run_after(sweep, run, logs):
                run["status"], run["returncode"] = "failed", None
                run["error"] = attempt_error(log, offset, True, 0)
                failed.append(run)
        else:
            print(f"[{i + 1}/{len(runs)}] {run['id']}: finished, skipped")
    sw.write_manifest(sweep, runs, root)
    active: dict[int, tuple[subprocess.Popen, float, int]] = {}  # run index -> (process, start, slot)
    offsets: dict[int, int] = {}  # run index -> where its attempt's output starts in its log
    try:
        while todo or active:
            while todo and len(active) < args.parallel:
                i = todo.pop(0)
                run = runs[i]
                verb = "resuming" if run["status"] == "interrupted" else "starting"
                slot = min(set(range(args.parallel)) - {a[2] for a in active.values()})
                env = dict(os.environ)
                if args.gpus_per_run:  # slot k gets GPUs k*G .. k*G+G-1
                    env["CUDA_VISIBLE_DEVICES"] = ",".join(
                        str(g) for g in range(slot * args.gpus_per_run, (slot + 1) * args.gpus_per_run))
                port = ["--main_process_port", str(free_port())] if len(base) > 1 and args.parallel > 1 else []
                cmd = [*base, *port, "launch/train.py", run["recipe"], *run["overrides"], "--resume", "auto"]
                with open(logs / f"{run['id']}.log", "a") as log:
                    log.write(f"$ {shlex.join(cmd)}\n")
                    log.flush()
                    offsets[i] = log.tell()  # this attempt's output starts here (the log is appended to)
                    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
                    active[i] = (proc, time.time(), slot)
                run["status"] = "running"
                print(f"[{i + 1}/{len(runs)}] {run['id']}: {verb}", flush=True)
                sw.write_manifest(sweep, runs, root)
            time.sleep(0.5)
            for i, (proc, started, _) in list(active.items()):
                if proc.poll() is None:
                    continue
                del active[i]
                run = runs[i]
                trained = proc.returncode == 0 and sw.state(run) == "finished"
                run["status"] = "finished" if trained else "failed"
                run["returncode"] = proc.returncode
                # the process's wall time, start-up (launcher, imports, data) included, summed over attempts;
                # run.json's sessions start once training has started
                run["seconds"] = round(run.get("seconds", 0.0) + time.time() - started, 1)
                run.pop("error", None)
                if run["status"] == "finished" and not run_after(sweep, run, logs):
                    run["status"] = "failed"
                if run["status"] == "failed":
                    run["error"] = attempt_error(logs / f"{run['id']}.log", offsets[i], trained, proc.returncode)
                    failed.append(run)
                why = f": {run['error']}" if run["status"] == "failed" else ""
                print(f"[{i + 1}/{len(runs)}] {run['id']}: {run['status']} (exit {proc.returncode}, "
                      f"{time.time() - started:.0f} s){why}", flush=True)
                sw.write_manifest(sweep, runs, root)
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reaches the runs too; a `kill -INT` of this process alone is passed on.
        # Each run resumes from its last checkpoint when the sweep is rerun.
        for proc, _, _ in active.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for i, (proc, _, _) in active.items():
            proc.wait()
            runs[i]["status"] = sw.state(runs[i])
        sw.write_manifest(sweep, runs, root)
        print(f"interrupted; rerun the same command to continue sweep '{sweep.name}'", file=sys.stderr)
        return 130
    for run in failed:
        print(f"error: run {run['id']} failed (exit {run.get('returncode')}): {run.get('error', 'see its log')}; "
              f"its log: {logs / (run['id'] + '.log')}", file=sys.stderr)
    if sweep.table and not failed:
        print_table(sweep, runs)
    print(f"sweep dir: {root / sweep.name}")
    print(f"wall time: {time.time() - began:.0f} s for this command, start-up of every run included")
    return 1 if failed else 0


def attempt_error(log: Path, offset: int, trained: bool, returncode: int | None) -> str:
    """Why an attempt failed, from its output in the log: the first error line of the training, or of a
    study's `after` command (evaluation) on a run that trained."""
    with open(log, errors="replace") as f:
        f.seek(offset)
        text = f.read()
    if trained:
        return f"an `after` command failed: {sw.first_error(text)}"
    if returncode == 0:
        return f"it exited before train.steps (stopped early): {sw.first_error(text)}"
    return sw.first_error(text)


def print_table(sweep: sw.Sweep, runs: list[dict]) -> None:
    """A study's table: compare.py --group-by on its runs."""
    from distgen.evaluation import grouping
    from distgen.evaluation.runs import load_run_dir

    data = [load_run_dir(r["dir"], r["id"]) for r in runs]
    plot = Path(runs[0]["dir"]).parent / "curves.png"
    try:
        print(grouping.report(data, list(sweep.table.get("group_by", [])), list(sweep.table.get("metrics", [])),
                              plot, ""), end="")
    except ConfigError as exc:
        print(f"error: the study's table: {exc}", file=sys.stderr)


def submit_argv(sweep: sw.Sweep, runs: list[dict], root: Path, args) -> list[str]:
    """launch/submit.py's command line for the array: its options pass through unchanged."""
    job_name = [] if "--job-name" in args.submit_options else ["--job-name", f"sweep-{sweep.name}"]
    # submit.py checks the first recipe with the fixed overrides; each task runs its own recipe and
    # overrides from the manifest (all validated already)
    return [runs[0]["recipe"], *sweep.fixed, f"run.dir={root / sweep.name}", *job_name, *args.submit_options]


def submit_array(sweep: sw.Sweep, runs: list[dict], root: Path, args, dry_run: bool) -> int:
    """One SLURM job array through launch/submit.py: task i runs runs[i] of sweep.json
    (launch/sweep_task.py reads $SLURM_ARRAY_TASK_ID), the array's % limit from --max-concurrent."""
    limit = f"%{args.max_concurrent}" if args.max_concurrent else ""
    manifest = sw.manifest_path(root, sweep.name)
    return submit.main(submit_argv(sweep, runs, root, args) + (["--dry-run"] if dry_run else []),
                       entry=["launch/sweep_task.py", shlex.quote(str(manifest))],
                       extra_sbatch=[f"#SBATCH --array=0-{len(runs) - 1}{limit}",
                                     f"# sweep {sweep.name}: array task i runs run i of {manifest} (its recipe and "
                                     "overrides replace those on the training command line)"])


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], usage=__doc__.split("\n\n")[1])
    parser.add_argument("target", help="a recipe (or comma-separated recipes), or a study file studies/NAME.yaml")
    parser.add_argument("grid", nargs="*", help="key=a,b,c (one value: the same for every run)")
    parser.add_argument("--name", default="", help="sweep name (default: recipe and swept keys)")
    parser.add_argument("--root", default="runs/sweeps", help="where sweep dirs go")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--local", action="store_true", help="run here (the default)")
    mode.add_argument("--slurm", action="store_true",
                      help="one SLURM job array; other options go to launch/submit.py (--time, --partition, ...)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs (or the array script), run nothing")
    local = parser.add_argument_group("--local")
    local.add_argument("--parallel", type=int, default=1, help="runs at a time")
    local.add_argument("--launcher", choices=["auto", "accelerate", "python"], default="auto",
                       help="auto: `accelerate launch` when installed, else python")
    local.add_argument("--launch-args", default="", help="flags for `accelerate launch`, e.g. '--num_processes 1'")
    local.add_argument("--gpus-per-run", type=int, default=0,
                       help="with --parallel K: run slot k sees GPUs k*G..k*G+G-1 (CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--max-concurrent", type=int, default=0, help="--slurm: array tasks running at once (%% limit)")
    args, rest = parser.parse_known_args(argv)
    args.submit_options = rest
    if rest and not args.slurm:
        parser.error(f"unrecognized arguments: {' '.join(rest)} (launch/submit.py's options need --slurm)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.parallel < 1 or args.max_concurrent < 0 or args.gpus_per_run < 0:
            raise ConfigError(f"--parallel must be >= 1, --max-concurrent and --gpus-per-run >= 0; got "
                              f"{args.parallel}, {args.max_concurrent}, {args.gpus_per_run}")
        sweep, runs, root = build(args)
        path = sw.manifest_path(root, sweep.name)
        if path.is_file():
            sw.check_same(sweep, sw.read_manifest(path))
        if not args.dry_run:
            check_data(runs)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.slurm and args.dry_run:
        return submit_array(sweep, runs, root, args, dry_run=True)
    if args.dry_run:
        print(f"sweep '{sweep.name}': {len(runs)} runs (validated), manifest {path}")
        for run in runs:
            print(f"  {run['id']}: {sw.state(run)}  {shlex.join([run['recipe'], *run['overrides']])}")
        return 0
    if args.slurm:
        if shutil.which("sbatch") is None:  # before the manifest says "submitted"
            print("error: sbatch not found: run this on a SLURM login node, or use --dry-run to see the script",
                  file=sys.stderr)
            return 2
        for run in runs:
            run["status"] = "finished" if sw.state(run) == "finished" else "submitted"
        sw.write_manifest(sweep, runs, root)
        return submit_array(sweep, runs, root, args, dry_run=False)
    return run_local(sweep, runs, root, args)


if __name__ == "__main__":
    sys.exit(main())
