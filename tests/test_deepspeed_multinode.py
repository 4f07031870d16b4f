"""launch/deepspeed/*.yaml across machines: Accelerate's standard (torchrun) launcher, never pdsh.

Each config goes through Accelerate's own `accelerate launch --config_file CONFIG --num_machines 2
--machine_rank R ...` (the flags launch/slurm/task.sh passes), in this process, with its two ways out
replaced by recorders: torchrun (the standard launcher) and the `deepspeed --hostfile` subprocess (pdsh).
Nothing is started; the test reads the torchrun configuration it would have started.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed.run as torchrun
import yaml
from accelerate.commands import launch as accelerate_launch

from conftest import ROOT, free_port

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
