"""The adversarial loop: every GAN family, driven by a list of phases.

    accelerate launch launch/train.py recipes/quickstart.yaml [key=value ...] [--resume auto]

One iteration walks the phases in order (by default D then G; WGAN-GP repeats D n_critic
times). Each phase takes a batch if it uses data, asks the family for named loss terms, sums
them, and steps the optimizers of that phase's nets. The family never sees Accelerate.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate.utils import set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from distgen import stats
from distgen.config import PhaseConfig
from distgen.data import load_info, split_urls, train_loader
from distgen.families import FAMILIES
from distgen.families.base import PhaseSpec, build_optimizer
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


def train(cfg, resume: str | None = None) -> str:
    acc = make_accelerator(cfg)
    run = Run(cfg, acc, resume)
    info = load_info(cfg.data)
    set_seed(cfg.run.seed)  # identical initial weights on every rank
    family = FAMILIES[cfg.family](cfg, info, acc.device)
    names = list(family.nets)
    optims = [build_optimizer(family.nets[n].parameters(), cfg.optim, family.lr(n)) for n in names]
    prepared = acc.prepare(*family.nets.values(), *optims)
    nets, opts = dict(zip(names, prepared[:len(names)])), dict(zip(names, prepared[len(names):]))
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
            for _ in range(phase.repeat):
                batch = None
                if phase.spec.uses_data:
                    batch = to_device(next(batches), acc.device)
                    state.batches += 1
                    images += len(batch["image"])
                terms = family.loss(phase.name, nets, batch)
                for net in phase.spec.nets:
                    opts[net].zero_grad(set_to_none=True)
                acc.backward(torch.stack(list(terms.values())).sum())
                for net in phase.spec.nets:
                    opts[net].step()
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
