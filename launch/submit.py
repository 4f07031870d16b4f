"""Submit a recipe to SLURM: render launch/slurm/train.sbatch and `sbatch` it (or print it).

    python launch/submit.py recipes/wgan_gp.yaml optim.lr_d=1e-4 --nodes 4 --gpus-per-node 8 \
        --partition gpu --time 24:00:00 [--account A] [--dry-run]
    python launch/submit.py recipes/quickstart.yaml --gpus-per-node 0 --processes-per-node 2 --time 30   # CPU-only
    python launch/submit.py recipes/vae_celeba.yaml --deepspeed launch/deepspeed/zero2.yaml --nodes 2 \
        --mixed-precision bf16                                   # DeepSpeed (single-objective families)

One node: the batch shell runs launch/launcher.py -> `accelerate launch`; several nodes: one task per
node (`srun` -> launch/slurm/task.sh -> launch/launcher.py -> `accelerate launch` with a c10d
rendezvous on the first node). The job is requeueable and gets SIGUSR1 `--signal-seconds` before its
time limit (SIGTERM from preemption or scancel is handled the same way): training checkpoints at the
next step and exits, the batch script requeues the job; the requeued job resumes from
checkpoints/latest of the same run dir (runs/<recipe>/slurm-<job id>). `--gpus-per-node 0` is a
CPU-only job (no GPU request; ACCELERATE_USE_CPU=1, `--processes-per-node` processes per node).
`--deepspeed CONFIG` launches with that Accelerate DeepSpeed config (launch/deepspeed/) on every node, with
torchrun and the same rendezvous (its deepspeed_multinode_launcher must be `standard`: DeepSpeed's own
pdsh launcher needs ssh and a hostfile); a CPU-only DeepSpeed job runs on DeepSpeed's CPU accelerator.
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

import yaml

from distgen import plugins, recipes
from distgen.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "launch" / "slurm" / "train.sbatch"


def seconds(time: str) -> int:
    """SLURM's --time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days, _, rest = time.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if "-" in time:
        h, m, s = (parts + [0, 0])[:3]
    else:
        h, m, s = {1: [0, parts[0], 0], 2: [0, *parts], 3: parts}[len(parts)]
    return ((int(days or 0) * 24 + h) * 60 + m) * 60 + s


def exports(args) -> str:
    """The job script's environment lines."""
    # (not under DeepSpeed: Accelerate's CPU switch would turn DeepSpeed off)
    lines = [] if args.gpus_per_node or getattr(args, "deepspeed", None) else ["export ACCELERATE_USE_CPU=1  # a CPU-only job"]
    if plugins.found():  # the job starts in the repository: a plug-in family's folder (cwd, recipe's) must reach it
        path = shlex.quote(plugins.pythonpath())
        lines.append(f"export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}  # plug-in families (docs/plugins.md)")
    return "\n".join(lines)


def deepspeed_config(path: str) -> str:
    """The --deepspeed config as `accelerate launch --config_file` will read it from the repo root,
    checked for what a SLURM job needs."""
    file = Path(path).resolve()
    if not file.is_file():
        raise ConfigError(f"--deepspeed {path}: no such file; use launch/deepspeed/zero1.yaml or zero2.yaml")
    try:
        config = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"--deepspeed {path} is not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict) or config.get("distributed_type") != "DEEPSPEED":
        raise ConfigError(f"--deepspeed {path} is not an Accelerate DeepSpeed config (distributed_type: DEEPSPEED); "
                          f"use launch/deepspeed/zero1.yaml or zero2.yaml")
    launcher = (config.get("deepspeed_config") or {}).get("deepspeed_multinode_launcher")
    if launcher != "standard":
        raise ConfigError(f"--deepspeed {path}: deepspeed_config.deepspeed_multinode_launcher is {launcher!r}; "
                          f"set it to standard (torchrun on every node, as this job starts them; Accelerate's "
                          f"default, pdsh, needs ssh and a hostfile)")
    return os.path.relpath(file, ROOT) if file.is_relative_to(ROOT) else str(file)


def render(args, overrides: list[str], entry: list[str] | None = None, extra_sbatch: list[str] = ()) -> str:
    """entry replaces launch/train.py (e.g. launch/sweep_task.py MANIFEST); extra_sbatch adds header lines."""
    cfg = recipes.load(args.recipe, overrides)  # fail here, not in the queue, on a typo
    per_node = args.processes_per_node or args.gpus_per_node or 1
    cpus = args.cpus_per_task or per_node * (4 if args.gpus_per_node else 1)
    recipe = shlex.quote(os.path.relpath(Path(args.recipe).resolve(), ROOT))
    train_args = [*(entry or ["launch/train.py"]), recipe, *(shlex.quote(o) for o in overrides)]
    if not any(o.startswith("run.dir=") for o in overrides):  # stable across requeues: the job id
        train_args.append(f'"run.dir=runs/{cfg.recipe}/slurm-${{SLURM_JOB_ID}}"')
    # --multi_gpu is accelerate's "several processes" switch; on CPUs it needs ACCELERATE_USE_CPU=1, or
    # every process would be a world of its own (two trainings in one run dir).
    launch_args = ["--multi_gpu"] if args.nodes * per_node > 1 else ([] if args.gpus_per_node else ["--cpu"])
    if args.deepspeed and recipes.family_class(cfg.family).STYLE == "adversarial":
        raise ConfigError(f"--deepspeed: DeepSpeed is not supported for the two-network family '{cfg.family}' "
                          f"(one engine, one optimizer); submit it without --deepspeed (DDP)")
    if args.deepspeed:  # DeepSpeed finds its accelerator itself (its CPU one on a CPU-only job)
        launch_args = ["--config_file", deepspeed_config(args.deepspeed), "--use_deepspeed"]
    launch_args += ["--mixed_precision", args.mixed_precision or "no", "--dynamo_backend", "no"]
    extra = [f"#SBATCH --gpus-per-node={args.gpus_per_node}" if args.gpus_per_node else "",
             f"#SBATCH --partition={args.partition}" if args.partition else "",
             f"#SBATCH --account={args.account}" if args.account else "", *extra_sbatch]
    log_dir = Path(args.log_dir).resolve()
    values = {
        "JOB_NAME": args.job_name or f"distgen-{cfg.recipe}", "NODES": str(args.nodes),
        "CPUS_PER_TASK": str(cpus), "TIME": args.time,
        "SIGNAL_SECONDS": str(args.signal_seconds), "LOG_DIR": shlex.quote(str(log_dir)),
        "EXTRA_SBATCH": "\n".join(line for line in extra if line), "WORKDIR": shlex.quote(str(ROOT)),
        "EXPORTS": exports(args),
        "NPROC": str(args.nodes * per_node),
        # a port per job id, unless given: two jobs sharing a node must not share a rendezvous port
        "PORT": str(args.port) if args.port else "$((20000 + SLURM_JOB_ID % 20000))",
        "PYTHON": shlex.quote(args.python), "ACCELERATE": shlex.quote(args.accelerate),
        "LAUNCH_ARGS": shlex.quote(" ".join(launch_args)), "TRAIN_ARGS": " ".join(train_args),
    }
    text = TEMPLATE.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text


def main(argv: list[str] | None = None, entry: list[str] | None = None, extra_sbatch: list[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=8, help="0: a CPU-only job (no GPU request)")
    parser.add_argument("--processes-per-node", type=int, default=0,
                        help="training processes per node (default: --gpus-per-node, or 1 on CPUs)")
    parser.add_argument("--cpus-per-task", type=int, default=0,
                        help="CPUs per node (default: 4 per GPU, or 1 per process on a CPU-only job)")
    parser.add_argument("--partition", default="")
    parser.add_argument("--account", default="")
    parser.add_argument("--time", default="24:00:00")
    parser.add_argument("--job-name", default="")
    parser.add_argument("--signal-seconds", type=int, default=300, help="USR1 this long before the time limit")
    parser.add_argument("--port", type=int, default=0, help="rendezvous port (default: 20000 + job id %% 20000)")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="")
    parser.add_argument("--deepspeed", default="", metavar="CONFIG",
                        help="launch with this Accelerate DeepSpeed config, e.g. launch/deepspeed/zero2.yaml")
    parser.add_argument("--log-dir", default=str(ROOT / "runs" / "slurm"), help="where the job logs go")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--accelerate", default=str(ROOT / ".venv" / "bin" / "accelerate"))
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script instead of submitting")
    args = parser.parse_intermixed_args(argv)  # overrides may come before or after the flags
    try:
        if args.nodes < 1 or args.gpus_per_node < 0 or args.processes_per_node < 0 or args.cpus_per_task < 0:
            raise ConfigError(f"--nodes must be >= 1 and --gpus-per-node, --processes-per-node, --cpus-per-task "
                              f">= 0; got {args.nodes}, {args.gpus_per_node}, {args.processes_per_node}, "
                              f"{args.cpus_per_task}")
        try:
            limit = seconds(args.time)
        except (ValueError, KeyError):
            raise ConfigError(f"--time {args.time!r} is not a SLURM time (MM, HH:MM:SS, D-HH:MM)") from None
        if not 0 < args.signal_seconds < limit:
            raise ConfigError(f"--signal-seconds {args.signal_seconds} must be > 0 and shorter than --time "
                              f"{args.time} ({limit} s), or every start of the job gets the stop signal at once")
        script = render(args, args.overrides, entry, extra_sbatch)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.log_dir)
    out.mkdir(parents=True, exist_ok=True)  # sbatch needs the --output folder to exist, --dry-run or not
    if args.dry_run:
        print(script, end="")
        return 0
    if shutil.which("sbatch") is None:
        print("error: sbatch not found: run this on a SLURM login node, or use --dry-run to see the script",
              file=sys.stderr)
        return 2
    path = out / f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{Path(args.recipe).stem}.sbatch"
    path.write_text(script)
    return subprocess.run(["sbatch", str(path)]).returncode


if __name__ == "__main__":
    sys.exit(main())
