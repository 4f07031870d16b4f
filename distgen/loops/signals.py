"""Stop requests for a running training: signal handlers, the dead-launcher watchdog, the SLURM requeue.

    install()   at the top of launch/train.py (run as a script), before the heavy imports: an early
                signal is kept, not fatal; Guard calls it again
    received()  the stop signals seen so far; Guard.preempted() turns them into an all-rank decision
    requeue(acc, step)   after the stop checkpoint: ask SLURM to run the job again
    note_end(acc, step, steps)   Run.finish: the run finished, or stopped early (for launch/launcher.py)
    exit_code() launch/train.py's exit status: 128 + N after a stop on signal N, where no launcher decides

SIGUSR1, SIGTERM and SIGINT all mean the same thing to a training process: finish the current step,
stop at the next boundary where the loop asks (every rank agrees there), write one checkpoint and exit.
A stopped run is not a finished one, so `train.py && evaluate.py` must not go on: `python launch/train.py`
exits 128 + N after a stop on signal N (130 for Ctrl-C), as launch/launcher.py does. Started by a launcher
(accelerate launch, torchrun) a training process exits 0, since those take any other status for a crash;
under launch/launcher.py each node's first process writes "finished" or "stopped" to DISTGEN_OUTCOME_FILE, and the
launcher exits 0 for a run that finished (a signal after the last step stops nothing) and 128 + N else.
Who sends them, and who must *not* act on them (the decisions, under proctrack/linuxproc and cgroup alike):

- The user or a scheduler other than SLURM signals launch/launcher.py (the command the README gives);
  it forwards the signal to the training processes and waits for them. `accelerate launch` itself runs
  under launch/launcher.py with TERM/INT/USR1 ignored (its elastic agent would otherwise kill the
  workers 30 s after a TERM, and USR1's default action kills it at once, orphaning them).
- SLURM's time-limit USR1 (`--signal=B:USR1@N`) reaches the batch shell only; launch/slurm/train.sbatch
  passes it to the launcher (one node) or to srun, which passes it to every process of the step (so
  the launcher, `accelerate launch` and the data-loader workers must survive a USR1: they do).
- `scancel --signal=TERM --full`, preemption, an admin `scontrol requeue` and `scancel` send TERM to every
  process of the job: the batch shell, launcher and `accelerate launch` wait, the training processes stop.
  Data-loader workers are forked from a training process and inherit this module's handler, so a TERM
  does not kill them either.
- Training processes started by a launcher (accelerate launch, torchrun) stop the same way when their
  launcher dies of anything, SIGKILL included: a parent-death signal (Linux prctl) and a watchdog thread
  that sees the parent change. A process that has not exited `DISTGEN_SHUTDOWN_TIMEOUT` seconds (default
  600) after its launcher died kills itself, so no orphan keeps a GPU.

Requeue: under SLURM with launch/slurm/train.sbatch (DISTGEN_REQUEUE_FILE set) the main process only writes
that file; the batch shell runs `scontrol requeue` once every training process has exited (and only if
SLURM still runs the job: a `scancel` stays a cancel), so SLURM's own TERM for the requeue meets no
process still writing a checkpoint. In a job script of your own
(SLURM_JOB_ID set, no DISTGEN_REQUEUE_FILE) the main process runs `scontrol requeue` itself.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import threading
import time

SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_received: list[int] = []
_stopped: list[int] = []  # the signal the last run stopped on before its last step ([0]: a signal on another rank)


def _handler(signum, frame):  # only records: the loop acts at the next step boundary it checks
    _received.append(signum)


def received() -> list[int]:
    return list(_received)


def install() -> None:
    """Record SIGUSR1/SIGTERM/SIGINT instead of dying of them; watch the launcher if there is one."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        if signal.getsignal(sig) is not _handler:
            signal.signal(sig, _handler)
    if not _watching:  # first call
        # Python puts the default action (death) back while it shuts down; a late signal must not turn a
        # clean exit into "killed by SIGUSR1"
        atexit.register(_ignore_from_now_on)
    if _started_by_a_launcher():
        _watch_parent()
    _watching.append(0)


def _ignore_from_now_on() -> None:
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _started_by_a_launcher() -> bool:
    # accelerate launch (single or multi-process) and torchrun set these for their training processes; a
    # plain `python launch/train.py` (maybe under nohup) must not stop when its shell goes away.
    return "ACCELERATE_MIXED_PRECISION" in os.environ or "TORCHELASTIC_RUN_ID" in os.environ


_watching: list[int] = []


def _watch_parent() -> None:
    if _watching:
        return
    parent = os.getppid()
    try:  # the kernel sends SIGTERM when the launcher (the thread that started us) dies, SIGKILL included
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog below still sees the parent change
        pass
    grace = float(os.environ.get("DISTGEN_SHUTDOWN_TIMEOUT", "600"))

    def watchdog():
        # also covers a launcher that died before prctl above ran, and non-Linux systems
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)  # handled: stop at the next boundary with a checkpoint
        time.sleep(grace)
        print(f"distgen: launcher (pid {parent}) gone and still running after {grace:.0f} s "
              f"(DISTGEN_SHUTDOWN_TIMEOUT): exiting", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watchdog, name="distgen-parent-watchdog", daemon=True).start()


def note_end(acc, step: int, steps: int) -> None:
    """The run ends at `step` of `steps` (Run.finish, every rank): stopped early by a signal, or finished.
    Each node's first process tells its launch/launcher.py which, through the file named in DISTGEN_OUTCOME_FILE."""
    _stopped.clear()
    if step < steps:  # the loops end early only on a stop signal (errors raise)
        _stopped.append((received() or [0])[0])
    path = os.environ.get("DISTGEN_OUTCOME_FILE")
    if path and acc.is_local_main_process:
        with open(path, "w") as f:
            f.write(f"stopped {step}\n" if _stopped else f"finished {step}\n")


def exit_code() -> int:
    """launch/train.py's exit status after a run that ended without an error: 0 when it finished; 128 + N
    when it stopped early on signal N, unless started by a launcher (0: launch/launcher.py reads the outcome
    file instead, and accelerate launch / torchrun would report any other status as a crashed worker)."""
    if not _stopped or _started_by_a_launcher():
        return 0
    return 128 + (_stopped[0] or signal.SIGTERM)


def requeue(acc, step: int) -> None:
    """After the checkpoint of `step`: say why the run stops, and ask SLURM to run the job again."""
    names = ", ".join(signal.Signals(s).name for s in sorted(set(_received))) or "a signal on another rank"
    acc.print(f"stopping at step {step} ({names}): checkpoint saved")
    job = os.environ.get("SLURM_JOB_ID")
    if not (acc.is_main_process and job):
        return
    request = os.environ.get("DISTGEN_REQUEUE_FILE")
    if request:  # launch/slurm/train.sbatch requeues once every process has exited
        with open(request, "w") as f:
            f.write(f"{step}\n")
        acc.print(f"requeue of SLURM job {job} requested (the batch script runs it after exit)")
        return
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    acc.print(f"scontrol requeue {job}: " + ("ok" if done.returncode == 0 else done.stderr.strip()))
