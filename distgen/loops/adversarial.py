"""The adversarial loop: every GAN family, driven by a list of phases.

    accelerate launch launch/train.py recipes/quickstart.yaml [key=value ...] [--resume auto]

One iteration walks the phases in order (by default D then G; WGAN-GP repeats D n_critic
times). Each phase takes a batch if it uses data, asks the family for named loss terms, sums
them, and steps the optimizers of that phase's nets; gradients flow only into those nets (the
others run under no_sync, and backward is limited to the stepped parameters). With
train.grad_accum = k every optimizer step of every phase sees k micro-batches. Mixed precision
comes from `accelerate launch --mixed_precision`. The family never sees Accelerate.
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch
from accelerate.utils import set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from distgen import stats
from distgen.config import PhaseConfig
from distgen.data import load_info, split_urls, train_loader
from distgen.families import FAMILIES
from distgen.families.base import PhaseSpec
from distgen.loops.common import Run, TrainState, checkpoint_meta, every, make_accelerator, to_device
from distgen.samples import generate, save_grid


@dataclass(frozen=True)
class Phase:
    name: str
    spec: PhaseSpec
    repeat: int = 1
    every: int = 1


def phases_of(cfg, family) -> list[Phase]:
    chosen = cfg.train.phases or [PhaseConfig(n, r) for n, r in family.DEFAULT_PHASES]
    return [Phase(p.name, family.PHASES[p.name], p.repeat, p.every) for p in chosen]


def convert_sync_bn(nets: dict, cfg, acc) -> dict:
    """SyncBatchNorm across processes where it exists (CUDA); elsewhere say once why not."""
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for net in nets.values() for m in net.modules())
    if not (cfg.train.sync_bn and has_bn and acc.num_processes > 1):
        return nets
    if acc.device.type == "cuda":
        return {n: torch.nn.SyncBatchNorm.convert_sync_batchnorm(net) for n, net in nets.items()}
    acc.print("note: SyncBatchNorm is CUDA-only; BatchNorm statistics stay per process on this device")
    return nets


def train(cfg, resume: str | None = None) -> str:
    acc = make_accelerator(cfg)
    run = Run(cfg, acc, resume)
    info = load_info(cfg.data)
    set_seed(cfg.run.seed)  # identical initial weights on every rank
    family = FAMILIES[cfg.family](cfg, info, acc.device)
    family.nets = convert_sync_bn(family.nets, cfg, acc)
    names = list(family.nets)
    optims = [family.optimizer(n, family.nets[n].parameters()) for n in names]
    prepared = acc.prepare(*family.nets.values(), *optims)
    nets, opts = dict(zip(names, prepared[:len(names)])), dict(zip(names, prepared[len(names):]))
    params = {n: [p for p in net.parameters() if p.requires_grad] for n, net in nets.items()}
    if acc.scaler is not None:  # fp16: families that differentiate D (gradient penalty) need the scale
        family.grad_scale = acc.scaler.get_scale
    G = acc.unwrap_model(nets[family.GENERATOR])
    ema = (AveragedModel(G, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema), use_buffers=True)
           if cfg.train.ema > 0 else None)
    state = TrainState()
    acc.register_for_checkpointing(state, *([ema] if ema else []))
    meta = checkpoint_meta(acc, names, ["train_state"] + (["ema"] if ema else []), info)
    if not run.resume():
        set_seed(cfg.run.seed + acc.process_index)  # each rank draws its own noise from here on

    phases = phases_of(cfg, family)
    loader = train_loader(split_urls(info, cfg.data.train_split, "data.train_split"), cfg.train.batch_size,
                          info, cfg.data, cfg.run.seed, acc.process_index, acc.num_processes,
                          start_batch=state.batches, pin_memory=acc.device.type == "cuda")
    batches = iter(loader)
    grid_inputs, grid_cols = family.grid_inputs(cfg.run.seed)
    last, images = cfg.train.steps, 0
    run.start(state.step)
    for step in range(state.step, last):
        for phase in phases:
            if step % phase.every:
                continue
            stepped = [nets[n] for n in phase.spec.nets]
            for _ in range(phase.repeat * cfg.train.grad_accum):  # grad_accum micro-batches per optimizer step
                with acc.accumulate(*stepped), ExitStack() as frozen:
                    for n in names:  # nets this phase does not step: no gradient sync, no weight grads
                        if n not in phase.spec.nets:
                            frozen.enter_context(acc.no_sync(nets[n]))
                    batch = None
                    if phase.spec.uses_data:
                        batch = to_device(next(batches), acc.device)
                        state.batches += 1
                        images += len(batch["image"])
                    terms = family.loss(phase.name, nets, batch)
                    acc.backward(torch.stack([t.float() for t in terms.values()]).sum(),
                                 inputs=[p for n in phase.spec.nets for p in params[n]])
                    for n in phase.spec.nets:  # no-ops until the last micro-batch (accumulate)
                        opts[n].step()
                        opts[n].zero_grad(set_to_none=True)
                        if acc.scaler is not None and acc.sync_gradients:  # fp16: inf/NaN grads skip a step
                            stats.report(f"{n}/skipped", float(opts[n].step_was_skipped))
                for name, value in terms.items():
                    stats.report(name, value)
        if ema is not None:
            ema.update_parameters(G)
        state.step = done = step + 1
        run.bar.update(1)

        if every(done, cfg.log.every, last):
            run.log(done, images)
            images = 0
        if every(done, cfg.log.sample_every, last) and acc.is_main_process:
            sampler = ema.module if ema is not None else G
            save_grid(generate(family, sampler, grid_inputs), run.dir / "samples" / f"step_{done}.png", grid_cols)
        if every(done, cfg.run.checkpoint_every, last):
            run.save(done, meta)
    run.check_ranks(nets)
    run.finish()
    return str(run.dir)
