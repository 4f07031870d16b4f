"""The run dir over a run's life: rollback, crash and resume, the lock, topology, full disks, run.json.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_run_dir.py
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import BIN, ROOT, TINY_GAN, metrics, run, train, script

SMOKE = "recipes/dcgan_digits_smoke.yaml"


def _args(digits, run_dir, *extra):
    return [sys.executable, "launch/train.py", SMOKE, *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", *extra]


def _popen(args):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "CUDA_VISIBLE_DEVICES": "",
           "WANDB_MODE": "disabled"}
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_until(proc, ready, what, timeout=180):
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"training ended before {what}:\n" + proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in metrics(run_dir) if "img/s" in r]  # training rows (eval rows carry eval/...)


def _latest(run_dir: Path) -> str:
    return os.readlink(run_dir / "checkpoints" / "latest")


def _last_logged(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else 0


# -- item 5: rollback -----------------------------------------------------------------------------

def test_rollback_moves_the_abandoned_branch_aside_and_auto_continues_the_new_one(digits, tmp_path):
    """Keep every checkpoint to 60, roll back to step_20, run to 30 under rotation (keep 2), then
    --resume auto: on the old code rotation deleted step_30 (the new branch), `latest` dangled and the
    requeue path silently restarted from step 0."""
    run_dir = tmp_path / "rb"
    common = [*TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "run.checkpoint_every=10"]
    train("dcgan_digits_smoke", *common, "train.steps=60", "run.keep_last=0")
    rolled = train("dcgan_digits_smoke", *common, "train.steps=30", "run.keep_last=2",
                   resume=str(run_dir / "checkpoints" / "step_20"))
    said = rolled.stdout + rolled.stderr
    assert said.count("moved the records of later steps") == 1 and "step_60" in said
    ckpts = run_dir / "checkpoints"
    assert _latest(run_dir) == "step_30" and (ckpts / "step_30" / "meta.json").is_file()
    aside = list((run_dir / "abandoned").glob("*/checkpoints"))
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == [f"step_{s}" for s in (30, 40, 50, 60)]

    again = train("dcgan_digits_smoke", *common, "train.steps=35", "run.keep_last=2", resume="auto")
    assert f"resumed from {ckpts / 'step_30'}" in again.stdout + again.stderr
    assert _steps(run_dir) == list(range(5, 36, 5))  # each step once, from the live branch
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["step_10.png", "step_20.png",
                                                                       "step_30.png", "step_35.png"]


def test_a_dangling_latest_is_an_error_never_a_fresh_start(digits, tmp_path):
    run_dir = tmp_path / "dangling"
    common = ["run.checkpoint_every=5", "run.keep_last=0"]
    train("dcgan_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=10", *common)
    (run_dir / "checkpoints" / "step_10").rename(tmp_path / "gone")  # latest -> step_10, now missing
    result = run(_args(digits, run_dir, "train.steps=15", *common, "--resume", "auto"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "step_10" in result.stderr and "step_5" in result.stderr  # what is missing, and what is there
    assert _steps(run_dir) == [5, 10]  # nothing was trained or appended


# -- item 6: crash and resume ---------------------------------------------------------------------

def test_sigkill_then_resume_auto_leaves_each_step_once_in_every_history(digits, tmp_path):
    run_dir = tmp_path / "crash"
    extra = ["run.checkpoint_every=20", "log.sample_every=5", "eval.every=0"]
    proc = _popen(_args(digits, run_dir, "train.steps=100000", *extra))
    # killed a few steps after a checkpoint: rows and grids exist that the checkpoint does not hold
    _wait_until(proc, lambda: _last_logged(run_dir) >= 25 and _last_logged(run_dir) % 20, "a row after a checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    saved = int(_latest(run_dir).split("_")[1])
    logged = _last_logged(run_dir)
    assert logged > saved  # rows and grids of steps the checkpoint does not hold: the lost branch
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": ' + str(logged + 5) + ', "D/re')  # and a line cut by the kill

    end = saved + 15
    train("dcgan_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", f"train.steps={end}",
          *extra, resume="auto")
    steps = [r["step"] for r in metrics(run_dir)]
    assert steps == list(range(5, end + 1, 5))  # strictly increasing, no gaps, no duplicates
    grids = sorted(int(p.stem.split("_")[1]) for p in (run_dir / "samples").glob("step_*.png"))
    assert grids == list(range(5, end + 1, 5))
    moved = [json.loads(line)["step"] for line in
             next((run_dir / "abandoned").glob("*/metrics.jsonl")).read_text().splitlines()]
    assert moved and min(moved) == saved + 5 and max(moved) == logged


def test_history_rewind_drops_later_eval_files_and_recomputes_the_summary(tmp_path):
    from distgen.loops.history import History

    class Cfg:
        class log:
            tensorboard = False

            class wandb:
                enabled = False

    (tmp_path / "eval").mkdir()
    (tmp_path / "samples").mkdir()
    for step, fid in ((10, 50.0), (20, 40.0), (30, 20.0)):
        (tmp_path / "eval" / f"step_{step}.json").write_text(json.dumps({"step": step, "fid": fid}))
        (tmp_path / "eval" / f"recon_step_{step}.png").write_bytes(b"png")
        (tmp_path / "samples" / f"step_{step}.png").write_bytes(b"png")
    (tmp_path / "summary.json").write_text(json.dumps({"last": {"fid": {"step": 30, "value": 20.0}},
                                                       "best": {"fid": {"step": 30, "value": 20.0}}}))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "x": 1}) + "\n" for s in (10, 20, 30)))
    moved = History(tmp_path, Cfg, None).rewind(20, tmp_path / "aside")
    assert moved
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["recon_step_10.png", "recon_step_20.png",
                                                                     "step_10.json", "step_20.json"]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_10.png", "step_20.png"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["last"]["fid"] == {"step": 20, "value": 40.0} and summary["best"]["fid"]["step"] == 20
    assert [r["step"] for r in metrics(tmp_path)] == [10, 20]


def test_wandb_continues_its_run_rewound_to_the_resumed_step(tmp_path):
    """W&B's own rewind (resume_from="<id>?_step=<N>"), not resume="allow", which drops the re-logged steps."""
    from distgen import recipes
    from distgen.loops.history import start_trackers as start_wandb

    class Acc:
        def init_trackers(self, project, config=None, init_kwargs=None):
            self.kwargs = init_kwargs["wandb"]

        def get_tracker(self, name):
            return type("Tracker", (), {"store_init_configuration": lambda self, config: None})()

    cfg = recipes.load(str(ROOT / SMOKE), ["log.wandb.enabled=true", "log.wandb.mode=offline"])
    acc = Acc()
    start_wandb(acc, cfg, tmp_path, 0)
    run_id = (tmp_path / "wandb_id.txt").read_text()
    assert acc.kwargs["id"] == run_id and "resume_from" not in acc.kwargs
    start_wandb(acc, cfg, tmp_path, 40)
    assert acc.kwargs["resume_from"] == f"{run_id}?_step=40" and "resume" not in acc.kwargs


def test_a_checkpoint_with_accelerates_numbered_model_files_still_resumes_and_loads(digits, tmp_path):
    """Checkpoints from before nets were written by name hold model.safetensors / model_1.safetensors."""
    from distgen.checkpoint import load_run

    run_dir = tmp_path / "old"
    common = [*TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "run.checkpoint_every=5"]
    train("dcgan_digits_smoke", *common, "train.steps=5")
    ckpt = run_dir / "checkpoints" / "step_5"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert list(meta["family_nets"].items()) == [("G", "G.safetensors"), ("D", "D.safetensors")]
    assert not list(ckpt.glob("model*.safetensors"))  # no private numbering any more
    for i, net in enumerate(meta["family_nets"]):  # make it an old-style checkpoint
        (ckpt / f"{net}.safetensors").rename(ckpt / ("model.safetensors" if i == 0 else f"model_{i}.safetensors"))
    meta["family_nets"] = {"G": "model.safetensors", "D": "model_1.safetensors"}
    del meta["topology"]
    (ckpt / "meta.json").write_text(json.dumps(meta))
    _, family, step = load_run(run_dir)
    assert step == 5
    for net, file in meta["family_nets"].items():  # evaluate.py's loader reads the numbered files' weights
        saved = load_file(str(ckpt / file))
        assert all(torch.equal(saved[k], v) for k, v in family.nets[net].state_dict().items()), net
    train("dcgan_digits_smoke", *common, "train.steps=10", resume="auto")
    assert _steps(run_dir) == [5, 10] and load_run(run_dir)[2] == 10
    # and the resume loaded them: step 10 is bit for bit a straight 10-step run's (unloaded weights would
    # have continued from the seeded initialisation)
    straight = tmp_path / "straight"
    train("dcgan_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={straight}", "run.checkpoint_every=5",
          "train.steps=10")
    for net in ("G", "D"):
        a, b = (load_file(str(d / "checkpoints" / "step_10" / f"{net}.safetensors")) for d in (straight, run_dir))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), net


# -- item 7: one live run per run dir ---------------------------------------------------------------

def test_a_second_start_on_a_live_run_dir_is_refused_and_a_killed_run_never_blocks(digits, tmp_path):
    run_dir = tmp_path / "live"
    first = _popen(_args(digits, run_dir, "train.steps=100000", "run.checkpoint_every=10"))
    try:
        _wait_until(first, lambda: (run_dir / "checkpoints" / "latest").exists(), "a checkpoint")
        started = time.time()
        second = run(_args(digits, run_dir, "train.steps=30", "run.checkpoint_every=10", "--resume", "auto"),
                     timeout=120)
        assert second.returncode != 0 and time.time() - started < 90
        assert f"pid {first.pid}" in second.stderr and socket.gethostname() in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    saved = int(_latest(run_dir).split("_")[1])
    train("dcgan_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", f"train.steps={saved + 5}",
          "run.checkpoint_every=10", resume="auto")
    assert _steps(run_dir)[-1] == saved + 5


# -- item 8: topology ------------------------------------------------------------------------------

def test_resume_under_another_topology_is_refused_unless_accepted(digits, tmp_path):
    run_dir = tmp_path / "topo"
    common = [*TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "run.checkpoint_every=5"]
    train("dcgan_digits_smoke", *common, "train.steps=5", "data.num_workers=0")
    meta = json.loads((run_dir / "checkpoints" / "step_5" / "meta.json").read_text())
    assert meta["topology"] == {"world_size": 1, "machines": 1, "num_workers": 0, "mixed_precision": "no"}
    refused = run(_args(digits, run_dir, "run.checkpoint_every=5", "train.steps=10", "data.num_workers=2",
                        "--resume", "auto"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "data.num_workers 0 -> 2" in refused.stderr and "--accept-new-data-order" in refused.stderr
    assert _steps(run_dir) == [5]
    train("dcgan_digits_smoke", *common, "train.steps=10", "data.num_workers=2", "--accept-new-data-order",
          resume="auto")
    assert _steps(run_dir) == [5, 10]


def test_topology_changes_name_world_size_and_precision():
    from distgen.loops.checkpointer import topology_changes

    now = {"world_size": 8, "machines": 2, "num_workers": 4, "mixed_precision": "bf16"}
    saved = {"topology": {"world_size": 4, "machines": 1, "num_workers": 4, "mixed_precision": "no"}}
    assert topology_changes(saved, now) == ["world size 4 -> 8", "mixed precision no -> bf16"]
    same_ranks = {"topology": {**now, "machines": 1}}  # 8 ranks on one machine, then on two: same data
    assert topology_changes(same_ranks, now) == []
    assert topology_changes({"world_size": 8}, now) == []  # an older checkpoint records only its world size


def test_the_replica_check_names_the_parameter_that_drifted(tmp_path):
    """Two ranks' fingerprints where one parameter differs on rank 1: ranks.json and the warning name it."""
    import torch

    from distgen import recipes
    from distgen.loops.checkpointer import Checkpointer

    class TwoRanks:  # the Accelerator surface check_ranks uses; rank 1 holds a drifted D.1.weight
        num_processes, process_index, is_main_process, mixed_precision = 2, 0, True, "no"

        def register_save_state_pre_hook(self, hook): pass
        def register_load_state_pre_hook(self, hook): pass
        def unwrap_model(self, net, **kwargs): return net

        def gather(self, mine):
            other = mine.clone()
            other[0, drifted] *= 1.5
            return torch.cat([mine, other])

    nets = {"G": torch.nn.Sequential(torch.nn.Linear(3, 4)), "D": torch.nn.Sequential(torch.nn.Linear(4, 2),
                                                                                       torch.nn.ReLU(), torch.nn.Linear(2, 1))}
    names = [f"{n}.{p}" for n in sorted(nets) for p, _ in nets[n].named_parameters()]
    drifted = names.index("D.2.weight")
    cfg = recipes.load(str(ROOT / SMOKE))
    checker = Checkpointer(tmp_path, cfg, TwoRanks(), {})
    assert checker.check_ranks(nets, step=40) is False
    ranks = json.loads((tmp_path / "ranks.json").read_text())
    assert ranks["drifted"] == ["D.2.weight"] and ranks["step"] == 40 and not ranks["in_sync"]
    drifted = []  # and in sync when nothing differs
    assert checker.check_ranks(nets, step=50) is True


# -- item 10: a real full disk ---------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root only); skipped, saying so, where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the injected-ENOSPC test still runs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("leave", [0.05, 0.6], ids=["nets-fail", "optimizer-fails"])
def test_a_really_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(digits, small_disk, leave):
    """Fill a real filesystem so that the second checkpoint fails inside safetensors (the nets, written
    first) or inside torch.save (the optimizer state): both are clean errors on every path."""
    from distgen.checkpoint import load_run

    run_dir = small_disk / "run"
    common = [*TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "run.checkpoint_every=4", "run.keep_last=0",
              "log.sample_every=1000"]
    train("dcgan_digits_smoke", *common, "train.steps=4")
    size = sum(p.stat().st_size for p in (run_dir / "checkpoints" / "step_4").iterdir())
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    grid = (run_dir / "samples" / "step_4.png").stat().st_size  # the last step's grid is written before the save
    (small_disk / "filler").write_bytes(b"\0" * max(free - int(size * leave) - 2 * grid - 16384, 0))
    result = run(_args(digits, run_dir, *common[len(TINY_GAN) + 2:], "train.steps=8", "--resume", "auto"))
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "could not write checkpoint step_8" in result.stderr
    assert "step_4" in result.stderr and "MiB free there" in result.stderr  # the intact checkpoint, named
    ckpts = run_dir / "checkpoints"
    assert _latest(run_dir) == "step_4" and not list(ckpts.glob(".*.tmp")) and not (ckpts / "step_8").exists()
    assert load_run(run_dir)[2] == 4


# -- also: --resume auto picks the newest run; a failed start leaves nothing ---------------------------

def _fake_run(base: Path, name: str, age: float) -> Path:
    ckpt = base / name / "checkpoints" / "step_10"
    ckpt.mkdir(parents=True)
    (ckpt / "meta.json").write_text("{}")
    (ckpt.parent / "latest").symlink_to("step_10")
    when = time.time() - age
    for path in (ckpt, ckpt / "meta.json"):
        os.utime(path, (when, when))
    os.utime(ckpt.parent / "latest", (when, when), follow_symlinks=False)
    return base / name


def test_resume_auto_picks_the_newest_run_not_the_lexically_last(tmp_path, monkeypatch):
    from distgen import recipes

    try:
        from distgen.loops.run_dir import resolve
    except ImportError:  # the code before the run dir split
        from distgen.loops.common import _resolve as resolve
    cfg = recipes.load(str(ROOT / SMOKE))
    monkeypatch.chdir(tmp_path)
    base = Path("runs") / "dcgan_digits_smoke"
    _fake_run(base, "slurm-4242", age=3600)  # sorts after timestamps, but is an hour old
    newest = _fake_run(base, "20261130-101500", age=60)
    run_dir, ckpt = resolve(cfg, "auto")
    assert Path(run_dir) == newest and Path(ckpt) == (newest / "checkpoints" / "step_10").resolve()


@pytest.mark.parametrize("bad", ["data", "inception"])
def test_a_start_that_fails_before_training_leaves_no_run_dir(digits, tmp_path, bad):
    run_dir = tmp_path / "never"
    extra = ([f"data.root={tmp_path / 'nothing'}"] if bad == "data" else
             [f"data.root={digits}", "eval.every=5", f"eval.inception_weights={tmp_path / 'missing.pth'}"])
    result = run([sys.executable, "launch/train.py", SMOKE, *TINY_GAN, *extra, f"run.dir={run_dir}"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert not run_dir.exists()


# -- issue 14: what ran, shown by compare and report -------------------------------------------------

def test_run_json_records_what_ran(digits, tmp_path):
    run_dir = tmp_path / "facts"
    train("dcgan_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=5",
          "data.num_workers=1")
    facts = json.loads((run_dir / "run.json").read_text())
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert facts["commit"] == head and isinstance(facts["commit_dirty"], bool)
    assert facts["command"][:2] == ["train.py", SMOKE] and f"run.dir={run_dir}" in facts["command"]
    assert (facts["world_size"], facts["machines"], facts["num_workers"], facts["mixed_precision"]) == (1, 1, 1, "no")
    assert facts["host"] == socket.gethostname() and facts["status"] == "finished"
    assert facts["started"] <= facts["ended"] and facts["stopped_early"] is False and facts["last_step"] == 5


def test_a_preempted_run_says_it_stopped_early_and_why(digits, tmp_path):
    run_dir = tmp_path / "stopped"
    proc = _popen(_args(digits, run_dir, "train.steps=100000", "run.checkpoint_every=100000"))
    _wait_until(proc, lambda: _last_logged(run_dir) >= 5, "a logged row")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM  # stopped early: not 0, so train.py && evaluate.py stops
    facts = json.loads((run_dir / "run.json").read_text())
    assert facts["status"] == "stopped early" and facts["stopped_early"] is True
    assert "SIGTERM" in facts["why"] and 0 < facts["last_step"] < 100000


def _run_dir_with(path: Path, precision: str, history: str) -> Path:
    path.mkdir()
    (path / "config.yaml").write_text("family: dcgan\ntrain:\n  steps: 20\n")
    (path / "metrics.jsonl").write_text(history)
    (path / "run.json").write_text(json.dumps({"mixed_precision": precision, "world_size": 2, "machines": 1,
                                               "num_workers": 2, "commit": "abc123", "host": "h",
                                               "status": "finished", "stopped_early": False}))
    return path


def test_compare_and_report_show_precision_and_read_past_a_cut_last_line(tmp_path):
    sys.path.insert(0, str(ROOT / "launch"))
    import compare
    import report

    rows = "".join(json.dumps({"step": s, "D/real": 0.5, "img/s": 10.0}) + "\n" for s in (5, 10))
    fp32 = _run_dir_with(tmp_path / "fp32", "no", rows + '{"step": 15, "D/re')  # cut by a kill
    bf16 = _run_dir_with(tmp_path / "bf16", "bf16", rows)
    out = script("compare", str(fp32), str(bf16), "--plot", str(tmp_path / "c.png"))
    assert out.returncode == 0, out.stderr
    assert "identical" not in out.stdout and "mixed_precision" in out.stdout and "bf16" in out.stdout
    md, _ = report.build(fp32)
    text = md.read_text()
    assert "last logged step 10" in text and "mixed precision" in text and "no" in text
    assert compare.load_run_dir(fp32).history[-1]["step"] == 10
