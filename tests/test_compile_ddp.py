"""train.compile with several processes: checkpointing must not strip DDP from the compiled nets.

Accelerate's unwrap_model(net) keeps torch.compile by default, and to do so re-points the compiled module
at the unwrapped net: after the first checkpoint `no_sync` was gone (gradient accumulation all-reduced
every micro-batch) while the compiled code still ran through DDP. A real DDP (gloo, world of 1) and a
real torch.compile (backend "eager") go through the checkpointer's own calls."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from accelerate.utils import DistributedType, extract_model_from_parallel
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from conftest import free_port
from distgen.loops.checkpointer import Checkpointer


@pytest.fixture
def world_of_one():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_checkpoint_keeps_ddp_inside_the_compiled_net(world_of_one, tmp_path):
    acc = SimpleNamespace(num_processes=1, process_index=0, distributed_type=DistributedType.MULTI_CPU, is_main_process=True, mixed_precision="no",
                          device=torch.device("cpu"), gather=lambda t: t,
                          unwrap_model=extract_model_from_parallel,  # what Accelerator.unwrap_model calls
                          register_save_state_pre_hook=lambda hook: None,
                          register_load_state_pre_hook=lambda hook: None)
    cfg = SimpleNamespace(data=SimpleNamespace(num_workers=0))
    checkpoints = Checkpointer(tmp_path, cfg, acc, {})
    ddp = DDP(nn.Linear(3, 2))
    compiled = torch.compile(ddp, backend="eager")
    compiled(torch.randn(4, 3)).sum().backward()

    assert checkpoints.check_ranks({"G": compiled}, step=1)  # every checkpoint fingerprints the replicas
    checkpoints._names = ["G"]
    checkpoints._save_nets_by_name([compiled], [], str(tmp_path))  # and writes each net by name
    assert (tmp_path / "G.safetensors").is_file()
    assert compiled._orig_mod is ddp and hasattr(compiled, "no_sync")
    with compiled.no_sync():  # what the stepper's gradient accumulation relies on
        compiled(torch.randn(4, 3)).sum().backward()
