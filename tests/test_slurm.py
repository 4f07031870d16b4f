"""The SLURM path on a real one-node SLURM (launch/slurm/local_cluster.sh starts it), through
launch/submit.py exactly as a user runs it: time limits, TERM to the whole job, an admin's requeue.

Every job here is CPU-only (`--gpus-per-node 0`) with tiny nets and log.every=1, and each history is
checked afterwards: every step logged once, the final step reached, `latest` at it. The cluster's config
(local_cluster.sh) makes a requeued job start again ~10 s later instead of SLURM's default 2 minutes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY_GAN, metrics, run, script

# What SLURM itself writes into the job log when it requeues a job (its own announcement, not ours)
REQUEUE_NOTICE = re.compile(r"slurmstepd.*: error: \*\*\* JOB \d+ ON \S+ CANCELLED AT \S+ DUE TO JOB REQUEUE \*\*\*")


@pytest.fixture(scope="session")
def slurm():
    """A SLURM that answers: the repo's one-node cluster, started here (and stopped after) unless one runs
    already. Without root or apt this fails, with the script's message: it never skips."""
    started = subprocess.run(["bash", "launch/slurm/local_cluster.sh", "start"], cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert started.returncode == 0, f"could not start the test SLURM:\n{started.stdout}{started.stderr}"
    yield
    if "nothing started" not in started.stderr:
        subprocess.run(["bash", "launch/slurm/local_cluster.sh", "stop"], cwd=ROOT, capture_output=True, timeout=120)


def _submit(tmp_path, digits, run_dir: Path, *args: str) -> str:
    result = run([sys.executable, "launch/submit.py", "recipes/dcgan_digits_smoke.yaml", *TINY_GAN, "log.every=1",
                  "log.sample_every=100000", "run.checkpoint_every=100000", f"data.root={digits}",
                  f"run.dir={run_dir}", "--gpus-per-node", "0", "--log-dir", str(tmp_path / "logs"), *args])
    assert result.returncode == 0, result.stderr
    return re.search(r"Submitted batch job (\d+)", result.stdout).group(1)


def _job(job: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def _log(tmp_path) -> str:
    return "\n".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.out")))


# The states a job (or array task) ends in; a requeued job passes through REQUEUED/PENDING instead.
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY")


def _states(job: str) -> list[str]:
    """The state of the job, or of each task of a job array, as slurmctld reports it (scontrol, which keeps
    ended jobs for MinJobAge, then squeue); once it has forgotten the job, the last job-completion record."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
    states = re.findall(r"\bJobState=(\S+)", out)
    if not states:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
        states = out.split()
    if not states:
        records = _jobcomp(job)
        states = re.findall(r"\bJobState=(\S+)", records[-1])[:1] if records else []
    return [s.split()[0] for s in states]


def _wait(what: str, ok, tmp_path, timeout: float = 600, job: str | None = None, expect: tuple[str, ...] = ()):
    """Poll `ok` until it holds; fail at once when `job` (any task of it) ends in a state not in `expect`,
    instead of waiting out the timeout for something that can no longer happen."""
    deadline = time.time() + timeout
    while not ok():
        if job is not None:
            ended = [s for s in _states(job) if s in TERMINAL and s not in expect]
            if ended and not ok():  # (ok() again: it may have come true as the job ended)
                pytest.fail(f"job {job} ended {', '.join(ended)} while waiting for {what}:\n"
                            f"{_log(tmp_path)[-4000:]}")
        assert time.time() < deadline, f"timed out waiting for {what}:\n{_log(tmp_path)[-4000:]}"
        time.sleep(0.5)


def _last_step(run_dir: Path) -> int:
    rows = metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    return rows[-1]["step"] if rows else 0


def _latest(run_dir: Path) -> int:
    latest = run_dir / "checkpoints" / "latest"
    return int(latest.resolve().name.split("_")[1]) if latest.exists() else 0


def _finished(job: str, run_dir: Path, steps: int, tmp_path) -> None:
    _wait(f"job {job} to complete", lambda: _states(job) == ["COMPLETED"], tmp_path, job=job)
    assert _job(job)["JobState"] == "COMPLETED" and _job(job)["ExitCode"] == "0:0", _log(tmp_path)[-4000:]
    assert [r["step"] for r in metrics(run_dir)] == list(range(1, steps + 1))  # every step once
    assert _latest(run_dir) == steps


def _jobcomp(job: str) -> list[str]:
    """The job's lines in SLURM's job-completion record (jobcomp/filetxt: one per requeue and at the end)."""
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    where = re.search(r"JobCompLoc\s*=\s*(\S+)", config).group(1)
    return [line for line in Path(where).read_text().splitlines() if f"JobId={job} " in line]


def _no_errors(log: str) -> None:
    """A clean stop and requeue reads as one: no traceback, no failed task, no error but SLURM's own notice."""
    bad = [line for line in log.splitlines() if re.search(r"error|Traceback|Exited with exit code|Killed", line,
                                                         re.I) and not REQUEUE_NOTICE.search(line)]
    assert not bad, "\n".join(bad)


def test_dry_run_renders_a_cpu_only_job_that_slurm_accepts(slurm, tmp_path):
    logs = tmp_path / "logs"
    out = run([sys.executable, "launch/submit.py", "recipes/quickstart.yaml", "--gpus-per-node", "0",
               "--processes-per-node", "2", "--time", "30", "--log-dir", str(logs), "--dry-run"])
    assert out.returncode == 0, out.stderr
    assert logs.is_dir()  # sbatch of the printed script needs its --output folder
    script = out.stdout
    assert "--gpus-per-node" not in script and "#SBATCH --cpus-per-task=2" in script
    assert "export ACCELERATE_USE_CPU=1" in script and "NPROC=2" in script and "--multi_gpu" in script
    (tmp_path / "job.sbatch").write_text(script)
    checked = subprocess.run(["sbatch", "--test-only", str(tmp_path / "job.sbatch")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr  # a GPU request would be refused on this GPU-less node

    gpus = run([sys.executable, "launch/submit.py", "recipes/wgan_gp.yaml", "--nodes", "4", "--gpus-per-node", "8",
                "--partition", "gpu", "--account", "lab", "--time", "12:00:00", "--log-dir", str(logs), "--dry-run"])
    assert gpus.returncode == 0, gpus.stderr
    for line in ["#SBATCH --nodes=4", "#SBATCH --gpus-per-node=8", "#SBATCH --cpus-per-task=32", "#SBATCH --requeue",
                 "#SBATCH --signal=B:USR1@300", "#SBATCH --partition=gpu", "#SBATCH --account=lab", "NPROC=32",
                 "srun", "launch/slurm/task.sh", "--resume auto", "run.dir=runs/wgan_gp/slurm-${SLURM_JOB_ID}"]:
        assert line in gpus.stdout, line
    commands = [line for line in gpus.stdout.splitlines() if not line.lstrip().startswith("#")]
    assert not any("ACCELERATE_USE_CPU" in line or "scancel" in line for line in commands)
    bad = run([sys.executable, "launch/submit.py", "recipes/wgan_gp.yaml", "--time", "4", "--dry-run"])
    assert bad.returncode == 2 and "--signal-seconds 300" in bad.stderr and "Traceback" not in bad.stderr


def _training_processes(run_dir: Path) -> list[int]:
    """The job's training processes (not the launcher or `accelerate launch`), found by their command line."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if f"run.dir={run_dir}" in argv and "launch/train.py" in argv and not any(
                a.endswith(("accelerate", "launcher.py")) for a in argv):
            found.append(int(entry))
    return found


def test_time_limit_usr1_checkpoints_requeues_resumes_and_finishes(slurm, digits, tmp_path):
    """`--signal=B:USR1@59` on a 1-minute job: SLURM signals the batch shell (up to 30 s after the job is
    within 59 s of its limit: its time-limit check period), training stops with a checkpoint, the batch
    script requeues the job, the requeued job resumes there and finishes. A clean requeue looks like
    one: no error line in the job log, exit code 0 in SLURM's records.

    So that the step of the stop does not depend on this machine's speed, the test pauses the training
    processes (SIGSTOP, as a very long step would) from their first logged step until the launcher has
    passed SLURM's USR1 on, then lets them go on (SIGCONT)."""
    run_dir, steps = tmp_path / "run", 100
    job = _submit(tmp_path, digits, run_dir, f"train.steps={steps}", "--time", "1", "--signal-seconds", "59")
    signalled = "launcher: SIGUSR1: the training processes stop"
    _wait("training or SLURM's USR1", lambda: _last_step(run_dir) > 0 or signalled in _log(tmp_path), tmp_path,
          job=job)
    paused = _training_processes(run_dir)
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        _wait("SLURM's USR1", lambda: signalled in _log(tmp_path), tmp_path, timeout=90, job=job)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    _wait("the time-limit requeue", lambda: int(_job(job).get("Restarts", 0)) >= 1, tmp_path, job=job)
    stopped = _latest(run_dir)
    assert 0 < stopped < steps
    # the second allocation gets the time to finish (else it would stop and requeue again, as it should)
    subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=10"], check=True)
    _finished(job, run_dir, steps, tmp_path)
    log = _log(tmp_path)
    assert f"stopping at step {stopped} (SIGUSR1): checkpoint saved" in log
    assert f"resumed from {run_dir / 'checkpoints' / f'step_{stopped}'}" in log
    _no_errors(log)
    records = _jobcomp(job)
    assert len(records) == 2 and all("ExitCode=0:0" in r for r in records), records


def test_term_to_the_whole_job_and_an_admin_requeue_lose_nothing_and_two_ranks_finish_in_sync(
        slurm, digits, tmp_path):
    """Two CPU processes. `scancel --signal=TERM --full` (TERM to every process of the job) mid-run: stop
    at the next step with a checkpoint, requeue, resume. Then an admin's `scontrol requeue` mid-run
    (SLURM sends TERM to every process, SIGKILL after KillWait): resume from the last checkpoint, no step
    lost or repeated. Finally both ranks end identical (ranks.json: world size 2, in sync)."""
    run_dir, steps = tmp_path / "run", 150
    job = _submit(tmp_path, digits, run_dir, f"train.steps={steps}", "--processes-per-node", "2",
                  "--cpus-per-task", "2", "--time", "10", "--signal-seconds", "60")
    _wait("training", lambda: _last_step(run_dir) > 0, tmp_path, job=job)
    subprocess.run(["scancel", "--signal=TERM", "--full", job], check=True)
    _wait("the requeue after TERM", lambda: int(_job(job).get("Restarts", 0)) >= 1, tmp_path, job=job)
    first = _latest(run_dir)
    assert 0 < first < steps
    _wait("the resumed run", lambda: _last_step(run_dir) > first, tmp_path, job=job)
    subprocess.run(["scontrol", "requeue", job], check=True)
    # Restarts counts the requeue at once; PENDING comes once the job's processes have ended
    _wait("the admin requeue", lambda: int(_job(job).get("Restarts", 0)) >= 2 and _job(job)["JobState"] == "PENDING",
          tmp_path, job=job)
    second = _latest(run_dir)
    assert first < second < steps
    _finished(job, run_dir, steps, tmp_path)
    log = _log(tmp_path)
    for step in (first, second):
        assert f"resumed from {run_dir / 'checkpoints' / f'step_{step}'}" in log
    assert "Traceback" not in log and "Exited with exit code" not in log
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["in_sync"]


def test_a_sweep_as_a_real_job_array_runs_every_task_to_its_end(slurm, digits, tmp_path):
    """`launch/sweep.py --slurm`: one job array on the real slurmctld, each task one run of the manifest
    (launch/sweep_task.py by $SLURM_ARRAY_TASK_ID), every run finished with its own seed, and the sweep
    dir compares as a sweep afterwards."""
    root, steps = tmp_path / "sweeps", 6
    result = run([sys.executable, "launch/sweep.py", "recipes/dcgan_digits_smoke.yaml", "run.seed=0,1", *TINY_GAN,
                  "log.every=1", "log.sample_every=100000", f"train.steps={steps}", f"data.root={digits}",
                  "--name", "seeds", "--root", str(root), "--slurm", "--gpus-per-node", "0", "--time", "5",
                  "--signal-seconds", "60", "--max-concurrent", "2", "--log-dir", str(tmp_path / "logs")])
    assert result.returncode == 0, result.stderr
    job = re.search(r"Submitted batch job (\d+)", result.stdout).group(1)
    manifest = json.loads((root / "seeds" / "sweep.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["submitted", "submitted"]

    def states() -> list[str]:  # "task|state|exit code" of each array task, as slurmctld reports it
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True).stdout
        tasks = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if "ArrayTaskId=" in line]
        return sorted(f"{t['ArrayTaskId']}|{t['JobState']}|{t['ExitCode']}" for t in tasks)

    _wait(f"array {job}'s two tasks", lambda: len(states()) == 2 and all(
        s.split("|")[1] not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING") for s in states()), tmp_path,
          job=job, expect=("COMPLETED",))
    assert states() == ["0|COMPLETED|0:0", "1|COMPLETED|0:0"], _log(tmp_path)[-4000:]
    seeds = []
    for task in manifest["runs"]:
        run_dir = Path(task["dir"])
        assert [r["step"] for r in metrics(run_dir)] == list(range(1, steps + 1)) and _latest(run_dir) == steps
        seeds.append(yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["seed"])
    assert sorted(seeds) == [0, 1]  # two runs, each with its own seed, not one run twice
    compared = script("compare", str(root / "seeds"), "--plot", str(tmp_path / "curves.png"))
    assert compared.returncode == 0 and "run.seed" in compared.stdout, compared.stdout + compared.stderr


def test_a_wait_fails_as_soon_as_the_job_ends_otherwise(slurm, tmp_path):
    """A job that fails at once ends the wait on it within seconds, naming the state, not after the
    timeout (the waits above used to run to their 600 s when a job died)."""
    (tmp_path / "logs").mkdir()
    sub = subprocess.run(["sbatch", "--parsable", "-o", str(tmp_path / "logs" / "%j.out"), "--wrap", "exit 3"],
                         capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    start = time.time()
    with pytest.raises(pytest.fail.Exception, match=f"job {job} ended FAILED while waiting for a step"):
        _wait("a step that never comes", lambda: False, tmp_path, timeout=120, job=job)
    assert time.time() - start < 60
