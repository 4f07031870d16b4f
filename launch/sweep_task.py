"""One task of a sweep's SLURM job array: run run number $SLURM_ARRAY_TASK_ID of the sweep's manifest.

    launch/sweep_task.py runs/sweeps/NAME/sweep.json [RECIPE OVERRIDES ...] [--resume auto]

Rendered into the array script by `launch/sweep.py --slurm` (through launch/submit.py) in place of
launch/train.py, so it runs under the same launcher, signals and requeue as a single job. The recipe
and overrides on its command line (the ones submit.py validated) are replaced by the task's own from
the manifest; flags (--resume auto) pass to launch/train.py. A run that already finished exits at once;
one that finishes here then gets the study's `after` commands (its evaluation), on rank 0.
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

from distgen import sweep as sw
from distgen.errors import ConfigError


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: sweep_task.py SWEEP_DIR/sweep.json [RECIPE OVERRIDES ...] [--resume auto]", file=sys.stderr)
        return 2
    try:
        manifest = sw.read_manifest(argv[0])
        runs = manifest["runs"]
        task = os.environ.get("SLURM_ARRAY_TASK_ID", "")
        if not task.isdigit() or int(task) >= len(runs):
            raise ConfigError(f"SLURM_ARRAY_TASK_ID={task!r}: the sweep has runs 0..{len(runs) - 1}; "
                                 f"run this inside the array job launch/sweep.py --slurm submitted")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    run = runs[int(task)]
    if sw.state(run) == "finished":
        print(f"sweep run {run['id']}: finished already ({run['dir']})")
        return 0
    flags = argv[next((i for i, a in enumerate(argv) if a.startswith("--")), len(argv)):]
    sys.argv = [str(Path(__file__).with_name("train.py")), run["recipe"], *run["overrides"], *flags]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if code == 0 and sw.state(run) == "finished" and os.environ.get("RANK", "0") == "0":
        for cmd in sw.after_commands(manifest.get("after") or [], run, sys.executable):  # a study's evaluation
            print(f"sweep run {run['id']}: {' '.join(cmd)}", flush=True)
            code = code or subprocess.run(cmd).returncode
        if code == 0:
            sw.mark_after_done(manifest.get("after") or [], run)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
