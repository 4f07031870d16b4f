"""Runs that survive clusters: SLURM script, preemption signals, requeue, faults that lose nothing."""
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

from conftest import BIN, ROOT, TINY_GAN, free_port, metrics, run, train, script
from distgen.checkpoint import load_run

CPU2 = "--multi_gpu --mixed_precision no --dynamo_backend no"


def _env(tmp_path, **extra):
    """Environment of a SLURM task (launch/slurm/task.sh) of a multi-node job, on this machine."""
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "",
            "ACCELERATE_USE_CPU": "1", "ACCELERATE": str(BIN / "accelerate"), "NNODES": "1", "NPROC": "2",
            "HEAD_NODE": "127.0.0.1", "HEAD_PORT": str(free_port()), "SLURM_NODEID": "0",
            "LAUNCH_ARGS": CPU2, "SLURM_JOB_ID": "4242", "WANDB_MODE": "disabled", **extra}


def _task(args, env, **kw):
    return subprocess.Popen(["bash", "launch/slurm/task.sh", "launch/train.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_metrics(run_dir: Path, proc, timeout=120):
    deadline = time.time() + timeout
    while not (run_dir / "metrics.jsonl").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "training never logged"
        time.sleep(0.5)


# The SLURM script, signals and requeue: tests/test_slurm.py (on a real SLURM) and tests/test_signals.py.


def test_two_nodes_over_loopback_train_together(digits, tmp_path):
    """Two `accelerate launch --num_machines 2 --machine_rank 0|1` (one process each) with the
    c10d rendezvous the sbatch script uses end with identical parameters."""
    run_dir = tmp_path / "twonode"
    port = str(free_port())
    args = ["recipes/dcgan_digits_smoke.yaml", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}",
            "train.steps=6"]
    def node(rank):
        return _task(args, _env(tmp_path, NNODES="2", NPROC="2", HEAD_PORT=port, SLURM_NODEID=str(rank),
                                LAUNCH_ARGS="--multi_gpu --mixed_precision no --dynamo_backend no"))

    # On one host both "nodes" match the rendezvous address; let node 0 host the store first (on a
    # cluster they are different hosts), or node 0's launcher finds the port taken and refuses.
    nodes = [node(0)]
    deadline = time.time() + 120
    while socket.socket().connect_ex(("127.0.0.1", int(port))) != 0:
        assert nodes[0].poll() is None and time.time() < deadline, nodes[0].communicate()[1][-3000:]
        time.sleep(0.2)
    nodes.append(node(1))
    for node in nodes:
        out, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["in_sync"]


def test_a_killed_rank_ends_the_run_in_bounded_time(digits, tmp_path):
    run_dir = tmp_path / "dead"
    env = _env(tmp_path)
    proc = _task(["recipes/dcgan_digits_smoke.yaml", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}",
                  "train.steps=100000", "run.collective_timeout=20"], env)
    _wait_for_metrics(run_dir, proc)
    launcher = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    workers = subprocess.run(["pgrep", "-P", launcher[0]], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    start = time.time()
    os.kill(int(workers[1]), signal.SIGKILL)
    proc.communicate(timeout=90)
    assert proc.returncode != 0 and time.time() - start < 60


def _faulty(fault, *args, env=None):
    return run([sys.executable, "tests/faults.py", fault, "recipes/dcgan_digits_smoke.yaml", *TINY_GAN, *args],
               env=env)


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_loadable(digits, tmp_path):
    run_dir = tmp_path / "killed"
    common = [f"data.root={digits}", f"run.dir={run_dir}", "run.checkpoint_every=4"]
    died = _faulty("kill_in_save", *common, "train.steps=12")
    assert died.returncode == -signal.SIGKILL
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "latest").resolve().name == "step_4" and (ckpts / ".step_8.tmp").is_dir()
    _, family, step = load_run(run_dir)  # the previous checkpoint loads
    assert step == 4 and all(torch.isfinite(p).all() for p in family.nets["G"].parameters())
    train("dcgan_digits_smoke", *TINY_GAN, *common, "train.steps=12", resume="auto")
    assert (ckpts / "latest").resolve().name == "step_12" and not list(ckpts.glob(".*.tmp"))


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(digits, tmp_path):
    run_dir = tmp_path / "full"
    result = _faulty("disk_full", f"data.root={digits}", f"run.dir={run_dir}", "run.checkpoint_every=4",
                     "train.steps=12")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "No space left on device" in result.stderr and "step_4" in result.stderr
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "latest").resolve().name == "step_4" and not list(ckpts.glob(".*.tmp"))
    assert load_run(run_dir)[2] == 4


@pytest.mark.parametrize("optimizer", [[], ["optim.name_d=rmsprop"], ["train.fused_optim=false"]],
                         ids=["fused", "rmsprop", "unfused_adam"])
def test_a_non_finite_step_is_skipped_and_counted(digits, tmp_path, optimizer):
    """A NaN D loss at step 3: skipped and counted, with the fused optimizers' device-side skip and with the
    host-side one of optimizers that have none (RMSprop, train.fused_optim=false): a stepped NaN gradient
    would have written NaN into D."""
    run_dir = tmp_path / "nan1"
    result = _faulty("nan_once", f"data.root={digits}", f"run.dir={run_dir}", "train.steps=10", "log.every=5",
                     *optimizer)
    assert result.returncode == 0, result.stderr[-3000:]
    first = metrics(run_dir)[0]
    assert first["nonfinite_skipped"] == pytest.approx(1 / 10)  # 1 of the first 10 optimizer steps (D and G)
    _, family, _ = load_run(run_dir)
    assert all(torch.isfinite(p).all() for net in family.nets.values() for p in net.parameters())


def test_too_many_non_finite_steps_stop_with_the_last_good_checkpoint(digits, tmp_path):
    run_dir = tmp_path / "nan"
    result = _faulty("nan_always", f"data.root={digits}", f"run.dir={run_dir}", "train.steps=50",
                     "run.checkpoint_every=2", "train.max_nonfinite=3")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "3 D steps in a row had non-finite gradients" in result.stderr
    named = result.stderr.split("Last good checkpoint: ")[1].split()[0]
    _, family, step = load_run(run_dir, named)  # skipped steps never wrote NaN into the weights
    assert step < 50 and all(torch.isfinite(p).all() for net in family.nets.values() for p in net.parameters())


def test_fp16_overflow_is_left_to_the_grad_scaler_which_backs_off(digits, tmp_path):
    """fp16 (a GradScaler): D overflows while the scale is above 64. The scaler must step (and skip) so
    its scale comes down; a guard that skipped the step itself would hold the scale and stop the run."""
    run_dir = tmp_path / "fp16"
    result = _faulty("overflow_above_64", f"data.root={digits}", f"run.dir={run_dir}", "train.steps=20",
                     "log.every=10", "train.max_nonfinite=3", env={"FAULT_CPU_SCALER": str(2.0 ** 16)})
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (r for r in metrics(run_dir) if "D/skipped" in r)
    assert first["D/skipped"] == pytest.approx(10 / 10)  # 2^16 -> 64: ten skipped D steps, then it trains
    assert second["D/skipped"] == 0 and first["G/skipped"] == second["G/skipped"] == 0
    _, family, _ = load_run(run_dir)
    assert all(torch.isfinite(p).all() for net in family.nets.values() for p in net.parameters())


def test_fp16_non_finite_below_scale_one_stops_the_run(digits, tmp_path):
    run_dir = tmp_path / "fp16nan"
    result = _faulty("nan_always", f"data.root={digits}", f"run.dir={run_dir}", "train.steps=50",
                     "train.max_nonfinite=3", env={"FAULT_CPU_SCALER": "4"})
    assert result.returncode == 3 and "3 D steps in a row had non-finite gradients" in result.stderr
    skipped = [r["D/skipped"] for r in metrics(run_dir) if "D/skipped" in r]
    assert skipped and max(skipped) > 0  # the scaler skipped them (scale 4 -> 2 -> 1 -> 0.5 ...) before the stop


def _deepspeed(zero, recipe, *overrides, precision="no"):
    return run([str(BIN / "accelerate"), "launch", "--config_file", f"launch/deepspeed/zero{zero}.yaml",
                "--mixed_precision", precision, "launch/train.py", f"recipes/{recipe}.yaml", *overrides])


def test_deepspeed_zero2_trains_a_single_objective_family_on_cpu(digits, tmp_path):
    run_dir = tmp_path / "zero2"
    result = _deepspeed(2, "classifier_digits", "model.width=8", f"data.root={digits}", f"run.dir={run_dir}",
                        "train.steps=6", "log.every=3", "eval.every=6", "run.checkpoint_every=6")
    assert result.returncode == 0, result.stderr[-3000:]
    acc = json.loads((run_dir / "eval" / "step_6.json").read_text())["acc"]
    assert [r["step"] for r in metrics(run_dir) if "cls" in r] == [3, 6]
    assert (run_dir / "checkpoints" / "latest" / "pytorch_model").is_dir()  # a DeepSpeed engine checkpoint
    # the engine stepped the net: its saved weights left the seeded initialisation, and they are the weights
    # the in-training accuracy was measured on (evaluate.py on the checkpoint gives the same number)
    cfg, family, step = load_run(run_dir)
    torch.manual_seed(cfg.run.seed)
    initial = type(family)(cfg, family.info, "cpu")
    moved = {name: any(not torch.equal(a, b) for a, b in zip(net.parameters(), initial.nets[name].parameters()))
             for name, net in family.nets.items()}
    assert step == 6 and moved and all(moved.values()), moved
    evaluated = script("evaluate", str(run_dir), "--metrics", "acc")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["acc"] == pytest.approx(acc, abs=1e-6)


def test_deepspeed_zero2_trains_a_family_of_several_nets_as_one_engine(digits, tmp_path):
    """The VAE (encoder + decoder, with BatchNorm) under ZeRO-2 in bf16: both nets train, and each net's
    full weights are written by name beside the engine checkpoint, so load_run / evaluate.py read them."""
    run_dir = tmp_path / "vae"
    result = _deepspeed(2, "vae_digits_smoke", "model.latent=8", "model.widths=[8, 16]", "train.batch_size=32",
                        "model.tsne_points=40", f"data.root={digits}", f"run.dir={run_dir}", "train.steps=6",
                        "log.every=3", "eval.every=3", "run.checkpoint_every=6", "log.sample_every=6",
                        precision="bf16")
    assert result.returncode == 0, result.stderr[-3000:]
    first, last = (json.loads((run_dir / "eval" / f"step_{n}.json").read_text())["mse"] for n in (3, 6))
    assert last < first  # the engine stepped both nets' parameters
    ckpt = run_dir / "checkpoints" / "latest"
    assert (ckpt / "pytorch_model").is_dir()
    evaluated = script("evaluate", str(run_dir), "--metrics", "test")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(evaluated.stdout.strip().splitlines()[-1])["mse"] == pytest.approx(last, rel=1e-4)
    cfg, family, step = load_run(run_dir)  # strict load of encoder.safetensors and decoder.safetensors
    assert step == 6 and json.loads((ckpt / "meta.json").read_text())["family_nets"] == {
        "encoder": "encoder.safetensors", "decoder": "decoder.safetensors"}
    torch.manual_seed(cfg.run.seed)  # the loop's initial weights (set_seed before building the family)
    initial = type(family)(cfg, family.info, "cpu")
    for name in ("encoder", "decoder"):  # both nets were stepped
        assert any(not torch.equal(a, b) for a, b in zip(family.nets[name].parameters(),
                                                         initial.nets[name].parameters())), name


def test_deepspeed_is_refused_for_gan_families_with_the_reason(digits, tmp_path):
    result = _deepspeed(2, "dcgan_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={tmp_path / 'g'}")
    # (under DeepSpeed, accelerate's launcher reports the child's exit code 2 as a failed child)
    assert result.returncode != 0
    assert "error: DeepSpeed is not supported for the two-network family 'dcgan'" in result.stderr
