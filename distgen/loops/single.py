"""The single-objective loop: classifier (and later VAE, DANN) — one net set, one loss, one optimizer.

    accelerate launch launch/train.py recipes/classifier_digits.yaml [key=value ...] [--resume auto]

Every `eval.every` steps (and at the end) the family's `evaluate` runs over the eval split,
each sample seen exactly once across ranks; the sums are added over ranks and written to
eval/step_<N>.json.
"""
from __future__ import annotations

import torch
from accelerate.utils import set_seed

from distgen import stats
from distgen.data import eval_batches, load_info, split_urls, train_loader
from distgen.families import FAMILIES
from distgen.families.base import build_optimizer
from distgen.loops.common import Run, TrainState, checkpoint_meta, every, make_accelerator, to_device


def evaluate(family, nets, info, cfg, acc) -> dict:
    for net in nets.values():
        net.eval()
    sums: dict[str, torch.Tensor] = {}
    urls = split_urls(info, cfg.data.eval_split, "data.eval_split")
    for batch in eval_batches(urls, cfg.train.batch_size, info, cfg.data.image_size,
                              acc.process_index, acc.num_processes):
        for k, v in family.evaluate(to_device(batch, acc.device), nets).items():
            sums[k] = sums.get(k, 0) + v
    for net in nets.values():
        net.train()
    names = sorted(sums)
    totals = acc.reduce(torch.stack([sums[n] for n in names]), reduction="sum").tolist()
    return {k: round(v, 6) for k, v in family.finish_eval(dict(zip(names, totals))).items()}


def train(cfg, resume: str | None = None) -> str:
    acc = make_accelerator(cfg)
    run = Run(cfg, acc, resume)
    info = load_info(cfg.data)
    set_seed(cfg.run.seed)  # identical initial weights on every rank
    family = FAMILIES[cfg.family](cfg, info, acc.device)
    names = list(family.nets)
    params = [p for n in names for p in family.nets[n].parameters()]
    prepared = acc.prepare(*family.nets.values(), build_optimizer(params, cfg.optim, cfg.optim.lr))
    nets, opt = dict(zip(names, prepared[:-1])), prepared[-1]
    state = TrainState()
    acc.register_for_checkpointing(state)
    meta = checkpoint_meta(acc, names, ["train_state"], info)
    if not run.resume():
        set_seed(cfg.run.seed + acc.process_index)

    loader = train_loader(split_urls(info, cfg.data.train_split, "data.train_split"), cfg.train.batch_size,
                          info, cfg.data, cfg.run.seed, acc.process_index, acc.num_processes,
                          start_batch=state.batches, pin_memory=acc.device.type == "cuda")
    batches = iter(loader)
    last, images = cfg.train.steps, 0
    run.start(state.step)
    for step in range(state.step, last):
        batch = to_device(next(batches), acc.device)
        state.batches += 1
        images += len(batch["image"])
        terms = family.loss(batch, nets)
        opt.zero_grad(set_to_none=True)
        acc.backward(torch.stack(list(terms.values())).sum())
        opt.step()
        for name, value in terms.items():
            stats.report(name, value)
        state.step = done = step + 1
        run.bar.update(1)

        if every(done, cfg.log.every, last):
            run.log(done, images)
            images = 0
        if every(done, cfg.eval.every, last) or done == last:
            run.write_eval(done, evaluate(family, nets, info, cfg, acc))
        if every(done, cfg.run.checkpoint_every, last):
            run.save(done, meta)
    run.check_ranks(nets)
    run.finish()
    return str(run.dir)
