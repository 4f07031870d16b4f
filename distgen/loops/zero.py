"""DeepSpeed ZeRO 1-2 in the single-objective loop: the fp32 master weights a checkpoint and evaluation read.

    accelerate launch --config_file launch/deepspeed/zero2.yaml --mixed_precision bf16 launch/train.py RECIPE.yaml

Under bf16/fp16 the engine's module holds rounded copies of the weights; the optimizer steps fp32
master weights, partitioned over the ranks. What a checkpoint's <net>.safetensors holds and what
evaluation scores is the model the optimizer trains: the masters, gathered with DeepSpeed's own
`safe_get_full_fp32_param`.
"""
from __future__ import annotations

import torch


def master_state_dict(acc, net) -> dict[str, torch.Tensor]:
    """`net`'s state dict (on the CPU) with every parameter replaced by its fp32 master weight and floating
    buffers in fp32 (BatchNorm statistics the engine keeps in bf16/fp16 are as rounded as they were).
    A collective under ZeRO (each rank holds a slice of the masters): every rank calls it, net by net."""
    from deepspeed.utils import safe_get_full_fp32_param

    module = acc.unwrap_model(net)
    state = {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in module.state_dict().items()}
    for name, param in module.named_parameters():
        master = safe_get_full_fp32_param(param)  # None for a parameter the optimizer does not own
        if master is not None:
            state[name] = master.detach()
    return {k: v.to("cpu").contiguous() for k, v in state.items()}
