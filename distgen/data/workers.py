"""data.num_workers=-1 (the default, "auto"): DataLoader workers from the CPUs this process has.

    accelerate launch --num_processes 8 launch/train.py recipes/dcgan_celeba.yaml   # auto: (CPUs / 8) - 1 each

The CPUs a process may use are its affinity mask (os.sched_getaffinity: what a cgroup, taskset or SLURM's
binding left it), at most SLURM_CPUS_PER_TASK when SLURM set it (without binding the mask may show the
whole node), shared by the processes of this machine (LOCAL_WORLD_SIZE, set by accelerate launch and
torchrun). One of them is the training process's own; the rest become workers, at most MAX_AUTO (past
that a worker mostly waits: docs/benchmarks.md). launch/submit.py asks 4 CPUs per GPU: 3 workers each.

Every rank must resolve the same count (the readers of split mode are ranks x workers): the same CPUs
per process on every node, as a SLURM job gives. The resolved count is what the checkpoint topology
and run.json record (distgen/loops/checkpointer.py), so a resume on other hardware says the data order
changes. `python -m pytest tests/test_workers_auto.py` checks the rule.

DISTGEN_MAX_WORKERS=N caps what auto resolves to (a shared login node, a machine where worker processes
are unwelcome). The test suite sets 0 (tests/conftest.py): its runs train inside the pytest process,
and forking DataLoader workers from that many-threaded process once aborted a worker; the tests that
are about workers ask for them by number.
"""
from __future__ import annotations

import os

AUTO = -1
MAX_AUTO = 8


def cpus_per_process(environ=None) -> int:
    env = os.environ if environ is None else environ
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    slurm = env.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    local = env.get("LOCAL_WORLD_SIZE", "")
    return max(1, cpus // int(local)) if local.isdigit() and int(local) > 0 else max(1, cpus)


def resolve_workers(requested: int, environ=None) -> int:
    """data.num_workers as given, or for AUTO: this process's CPUs less one, at most MAX_AUTO."""
    if requested != AUTO:
        return requested
    env = os.environ if environ is None else environ
    cap = env.get("DISTGEN_MAX_WORKERS", "")
    most = int(cap) if cap.isdigit() else MAX_AUTO
    return min(MAX_AUTO, most, cpus_per_process(environ) - 1)
