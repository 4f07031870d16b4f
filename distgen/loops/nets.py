"""Net preparation, the one path both training loops take: every `train.*` switch that changes the nets.

    accelerate launch launch/train.py recipes/dcgan_celeba.yaml train.channels_last=true train.compile=inductor

Before Accelerate's prepare (`before_prepare`): BatchNorm -> SyncBatchNorm across processes
(train.sync_bn), TF32 and cuDNN autotuning on CUDA (train.tf32, train.cudnn_benchmark), the NHWC memory
format (train.channels_last). After it (`after_prepare`): Accelerate's per-forward autocast wrapper taken
off (the loops open one autocast per phase around the family's loss: distgen/loops/stepper.py), then
torch.compile (train.compile) around the prepared (DDP) modules, so DDP's hooks are inside; nets a family
lists in EAGER (double backward) stay eager. The unwrapped modules checkpoints save are the same objects.
"""
from __future__ import annotations

import torch

from distgen.sync_batchnorm import convert_sync_batchnorm


def convert_sync_bn(nets: dict, cfg, acc) -> dict:
    """BatchNorm statistics over every process's batch (train.sync_bn), on any device: distgen's
    SyncBatchNorm (distgen/sync_batchnorm.py: no host sync, one all_reduce per forward and backward)."""
    if not (cfg.train.sync_bn and acc.num_processes > 1):
        return nets
    return {n: convert_sync_batchnorm(net) for n, net in nets.items()}


def before_prepare(nets: dict, cfg, acc) -> dict:
    """The nets as the switches want them before their optimizers are built and Accelerate prepares them."""
    nets = convert_sync_bn(nets, cfg, acc)
    if acc.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.train.tf32
        # fixed shapes every step: let cuDNN time its algorithms once per shape and keep the fastest
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    if cfg.train.channels_last:
        nets = {n: net.to(memory_format=torch.channels_last) for n, net in nets.items()}
    return nets


def after_prepare(nets: dict, cfg, acc, eager: tuple[str, ...] = ()) -> dict:
    """Prepared nets -> the modules the loop calls: without Accelerate's autocast around each forward (one
    autocast per phase instead: each net's weights are cast once per phase, not once per call, and the
    outputs are not cast back to fp32 after every call), compiled where train.compile asks."""
    for net in nets.values():
        acc.unwrap_model(net, keep_fp32_wrapper=False)  # in place: drops the forward wrapper prepare added
    if cfg.train.compile:
        nets = {n: net if n in eager else torch.compile(net, backend=cfg.train.compile) for n, net in nets.items()}
    return nets
