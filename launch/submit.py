"""Submit a recipe to SLURM: render launch/slurm/train.sbatch and `sbatch` it (or print it).

    python launch/submit.py recipes/wgan_gp.yaml optim.lr_d=1e-4 --nodes 4 --gpus-per-node 8 \
        --partition gpu --time 24:00:00 [--account A] [--dry-run]

The job runs one task per node (`srun` -> launch/slurm/task.sh -> `accelerate launch` with a c10d
rendezvous on the first node), is requeueable, and gets SIGUSR1 `--signal-seconds` before its
time limit: training checkpoints at the next step, requeues the job and exits; the requeued job
resumes from checkpoints/latest of the same run dir (runs/<recipe>/slurm-<job id>).
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from distgen import recipes
from distgen.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "launch" / "slurm" / "train.sbatch"


def render(args, overrides: list[str]) -> str:
    cfg = recipes.load(args.recipe, overrides)  # fail here, not in the queue, on a typo
    recipe = shlex.quote(os.path.relpath(Path(args.recipe).resolve(), ROOT))
    train_args = ["launch/train.py", recipe, *(shlex.quote(o) for o in overrides)]
    if not any(o.startswith("run.dir=") for o in overrides):  # stable across requeues: the job id
        train_args.append(f'"run.dir=runs/{cfg.recipe}/slurm-${{SLURM_JOB_ID}}"')
    launch_args = ["--multi_gpu"] if args.nodes * args.gpus_per_node > 1 else []
    if args.mixed_precision:
        launch_args += ["--mixed_precision", args.mixed_precision]
    extra = [f"#SBATCH --partition={args.partition}" if args.partition else "",
             f"#SBATCH --account={args.account}" if args.account else ""]
    values = {
        "JOB_NAME": args.job_name or f"distgen-{cfg.recipe}", "NODES": str(args.nodes),
        "GPUS_PER_NODE": str(args.gpus_per_node), "CPUS_PER_TASK": str(args.cpus_per_task), "TIME": args.time,
        "SIGNAL_SECONDS": str(args.signal_seconds), "LOG_DIR": shlex.quote(str(ROOT / "runs" / "slurm")),
        "EXTRA_SBATCH": "\n".join(line for line in extra if line), "WORKDIR": shlex.quote(str(ROOT)),
        "NPROC": str(args.nodes * args.gpus_per_node), "PORT": str(args.port),
        "ACCELERATE": shlex.quote(args.accelerate), "LAUNCH_ARGS": shlex.quote(" ".join(launch_args)),
        "TRAIN_ARGS": " ".join(train_args),
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--cpus-per-task", type=int, default=32)
    parser.add_argument("--partition", default="")
    parser.add_argument("--account", default="")
    parser.add_argument("--time", default="24:00:00")
    parser.add_argument("--job-name", default="")
    parser.add_argument("--signal-seconds", type=int, default=300, help="USR1 this long before the time limit")
    parser.add_argument("--port", type=int, default=29500)
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="")
    parser.add_argument("--accelerate", default=str(ROOT / ".venv" / "bin" / "accelerate"))
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script instead of submitting")
    args = parser.parse_args(argv)
    try:
        if args.nodes < 1 or args.gpus_per_node < 1:
            raise ConfigError("--nodes and --gpus-per-node must be >= 1")
        script = render(args, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(script, end="")
        return 0
    if shutil.which("sbatch") is None:
        print("error: sbatch not found: run this on a SLURM login node, or use --dry-run to see the script",
              file=sys.stderr)
        return 2
    out = ROOT / "runs" / "slurm"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{Path(args.recipe).stem}.sbatch"
    path.write_text(script)
    return subprocess.run(["sbatch", str(path)]).returncode


if __name__ == "__main__":
    sys.exit(main())
