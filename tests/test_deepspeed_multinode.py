"""DeepSpeed across machines: launch/deepspeed/*.yaml take Accelerate's standard (torchrun) launcher, never
pdsh; launch/submit.py --deepspeed renders a job for 1 and N nodes, and its 2-node job trains in sync.

Each config goes through Accelerate's own `accelerate launch --config_file CONFIG --num_machines 2
--machine_rank R ...` (the flags launch/slurm/task.sh passes), in this process, with its two ways out
replaced by recorders: torchrun (the standard launcher) and the `deepspeed --hostfile` subprocess (pdsh).
Nothing is started; the test reads the torchrun configuration it would have started.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch.distributed.run as torchrun
import yaml
from accelerate.commands import launch as accelerate_launch

from conftest import BIN, ROOT, free_port, metrics, script

CONFIGS = sorted((ROOT / "launch" / "deepspeed").glob("*.yaml"))


def test_there_are_deepspeed_configs():
    assert [p.name for p in CONFIGS] == ["zero1.yaml", "zero2.yaml"]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_every_deepspeed_config_names_the_standard_multinode_launcher(config: Path):
    assert yaml.safe_load(config.read_text())["deepspeed_config"]["deepspeed_multinode_launcher"] == "standard"


@pytest.mark.parametrize("rdzv", ["c10d", "static"])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_two_machines_start_through_torchrun_with_the_head_as_rendezvous(config: Path, rdzv: str, monkeypatch, tmp_path):
    """What `accelerate launch` does with the config on machine 1 of 2: no `deepspeed --hostfile` (pdsh)
    command, but torchrun with 2 nodes, this node's rank and the head node's address, for the c10d
    rendezvous of launch/slurm/task.sh and the config's own static one."""
    port = free_port()
    argv = ["--config_file", str(config), "--num_machines", "2", "--num_processes", "2", "--machine_rank", "1",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--rdzv_backend", rdzv,
            "launch/train.py", "recipes/classifier_digits.yaml"]
    monkeypatch.chdir(tmp_path)  # the pdsh path would write a .deepspeed_env file here
    started = {}
    monkeypatch.setattr(accelerate_launch, "_run_torchrun", lambda args: started.setdefault("torchrun", args))
    monkeypatch.setattr(accelerate_launch, "_run_subprocess",
                        lambda cmd, env, quiet=False: started.setdefault("subprocess", cmd))
    monkeypatch.setattr(accelerate_launch, "check_cuda_p2p_ib_support", lambda: True)
    accelerate_launch.launch_command(accelerate_launch.launch_command_parser().parse_args(argv))
    assert list(started) == ["torchrun"], started  # pdsh would run `deepspeed --hostfile ... --launcher pdsh`
    args = started["torchrun"]
    assert args.use_deepspeed and args.deepspeed_multinode_launcher == "standard"
    filtered = accelerate_launch._filter_args(args, torchrun.get_args_parser(),
                                              ["--training_script", args.training_script,
                                               "--training_script_args", args.training_script_args])
    launch_config, _, _ = torchrun.config_from_args(filtered)
    assert (launch_config.min_nodes, launch_config.max_nodes, launch_config.nproc_per_node) == (2, 2, 1)
    assert launch_config.rdzv_backend == rdzv and launch_config.rdzv_endpoint == f"127.0.0.1:{port}"
    if rdzv == "static":
        assert launch_config.rdzv_configs["rank"] == 1


def _submit(*args: str) -> subprocess.CompletedProcess:
    return script("submit", "recipes/classifier_digits.yaml", "--gpus-per-node", "0",
                  "--deepspeed", "launch/deepspeed/zero2.yaml", "--dry-run", *args)


def _exports(script: str) -> dict[str, str]:
    """The variables the sbatch script exports for launch/slurm/task.sh, as bash would read them."""
    out = {}
    for line in script.splitlines():
        if line.startswith("export ") and "=" in line:
            out.update(w.split("=", 1) for w in shlex.split(line[len("export "):], comments=True) if "=" in w)
    return out


def test_submit_renders_a_deepspeed_job_for_one_and_several_nodes(tmp_path):
    for nodes in (1, 2):
        result = _submit("--nodes", str(nodes), "--log-dir", str(tmp_path))
        assert result.returncode == 0, result.stderr
        exports = _exports(result.stdout)
        assert exports["LAUNCH_ARGS"].split()[:3] == ["--config_file", "launch/deepspeed/zero2.yaml", "--use_deepspeed"]
        assert "--multi_gpu" not in exports["LAUNCH_ARGS"] and "--cpu" not in exports["LAUNCH_ARGS"]
        assert "ACCELERATE_USE_CPU" not in exports  # Accelerate's CPU switch would turn DeepSpeed off
        assert exports["NNODES"] == exports["NPROC"] == str(nodes)


@pytest.mark.parametrize("args, message", [
    (["--deepspeed", "launch/deepspeed/nope.yaml"], "--deepspeed launch/deepspeed/nope.yaml: no such file"),
    (["--deepspeed", "recipes/quickstart.yaml"], "is not an Accelerate DeepSpeed config"),
    (["--deepspeed", "{pdsh}"], "deepspeed_multinode_launcher is None; set it to standard"),
])
def test_submit_refuses_a_config_that_is_not_a_standard_deepspeed_one(tmp_path, args, message):
    pdsh = tmp_path / "pdsh.yaml"  # a config as Accelerate's `accelerate config` writes it: no launcher named
    pdsh.write_text((ROOT / "launch" / "deepspeed" / "zero2.yaml").read_text().replace(
        "  deepspeed_multinode_launcher: standard\n", ""))
    result = script("submit", "recipes/classifier_digits.yaml", "--dry-run", "--log-dir", str(tmp_path),
                    *[a.replace("{pdsh}", str(pdsh)) for a in args])
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_submit_refuses_deepspeed_for_a_gan_family(tmp_path):
    result = script("submit", "recipes/dcgan_digits_smoke.yaml", "--dry-run", "--deepspeed",
                    "launch/deepspeed/zero2.yaml", "--log-dir", str(tmp_path))
    assert result.returncode == 2 and "not supported for the two-network family 'dcgan'" in result.stderr


def test_two_nodes_over_loopback_train_under_deepspeed_zero2_in_sync(digits, tmp_path):
    """The 2-node job launch/submit.py --deepspeed renders, run as its two SLURM tasks would run it: two
    launch/slurm/task.sh (`accelerate launch --num_machines 2 --machine_rank 0|1 ...`, one process each) on
    127.0.0.1, ZeRO-2, the tiny classifier. Both ranks train the same weights, and the checkpoint's
    ZeRO state is one file per rank."""
    run_dir = tmp_path / "ds2"
    rendered = _submit("--nodes", "2", "--log-dir", str(tmp_path / "logs"))
    assert rendered.returncode == 0, rendered.stderr
    port = str(free_port())
    env = {**os.environ, **_exports(rendered.stdout), "PATH": f"{BIN}:{os.environ['PATH']}",
           "CUDA_VISIBLE_DEVICES": "", "WANDB_MODE": "disabled", "HEAD_NODE": "127.0.0.1", "HEAD_PORT": port,
           "SLURM_JOB_ID": "4343"}
    args = ["launch/train.py", "recipes/classifier_digits.yaml", "model.width=8", "train.batch_size=32",
            f"data.root={digits}", f"run.dir={run_dir}", "train.steps=4", "log.every=2", "eval.every=4",
            "run.checkpoint_every=4", "log.sample_every=100"]

    def node(rank):
        return subprocess.Popen(["bash", "launch/slurm/task.sh", *args], cwd=ROOT, env={**env, "SLURM_NODEID": str(rank)},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # both "nodes" are this host: node 0 hosts the rendezvous store first (as in tests/test_cluster.py)
    nodes = [node(0)]
    deadline = time.time() + 120
    while socket.socket().connect_ex(("127.0.0.1", int(port))) != 0:
        assert nodes[0].poll() is None and time.time() < deadline, nodes[0].communicate()[1][-3000:]
        time.sleep(0.2)
    nodes.append(node(1))
    for proc in nodes:
        _, err = proc.communicate(timeout=540)
        assert proc.returncode == 0, err[-3000:]
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["in_sync"], ranks
    ckpt = run_dir / "checkpoints" / "latest"
    assert json.loads((ckpt / "meta.json").read_text())["topology"]["world_size"] == 2
    assert len(list((ckpt / "pytorch_model").glob("*zero_pp_rank_*_optim_states.pt"))) == 2
    assert [r["step"] for r in metrics(run_dir) if "cls" in r] == [2, 4]  # (the eval lines have "acc" only)
