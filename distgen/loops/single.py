"""The single-objective loop: classifier, VAE, DANN — one summed loss, one optimizer over all the family's nets.

    accelerate launch launch/train.py recipes/dann_digits.yaml [key=value ...] [--resume auto]

Data. A family trains on data.root unless its `streams(cfg, which)` names several shard sets
(DANN: `source` and `target`); then `loss` gets {name: batch}. Every stream gives one batch per
micro-batch, so one counter resumes them all; stream i is shuffled with seed run.seed + i.

Steps. One training step is one optimizer step over train.grad_accum micro-batches (each a batch
of every stream), as in the adversarial loop; the stepper (distgen/loops/stepper.py, shared with
it) runs backward, accumulation, the fp16 scaler or the non-finite guard, and zero_grad.

Progress. Before each step the loop calls `family.set_progress(step / train.steps)` (GRL schedule,
KL warm-up). A family with an `lr_factor(p)` gets that learning-rate schedule through a LambdaLR
prepared by Accelerate (one scheduler step per training step, whatever the process count; saved
and restored with the checkpoint). Preemption signals and non-finite gradients are handled as in
the adversarial loop, at log and checkpoint boundaries (distgen/loops/guard.py).

Evaluation, every eval.every steps and at the end: `family.evaluate(batch, nets)` returns sums
over one batch; every eval split is walked once across all ranks (sample j on rank j % world),
the sums are added over ranks (keys prefixed "<stream>/" when there are several) and
`finish_eval` turns them into eval/step_<N>.json. Every log.sample_every steps and at the end the
main process draws the family's `figures` from the first test samples. Both use eval-mode copies
of the nets holding rank 0's weights and BatchNorm statistics: the model the checkpoint holds,
on any number of processes, and the training state is left untouched.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
from accelerate.utils import broadcast, gather_object, set_seed
from torch.optim.lr_scheduler import LambdaLR

from distgen import stats
from distgen.data import eval_batches, load_info, split_urls, train_loader
from distgen.errors import ConfigError
from distgen.families.base import build_optimizer
from distgen.loops.common import Run, TrainState, checkpoint_meta, every, make_accelerator, to_device
from distgen.loops import nets as prepare_nets
from distgen.loops.guard import Guard
from distgen.loops.stepper import Group, Stepper
from distgen.loops.zero import master_state_dict
from distgen.recipes import family_class

ONE = ""  # the name of the only stream of a single-stream family


def streams(family_cls, cfg, which: str) -> dict[str, tuple[list[str], object]]:
    """name -> (shard urls, DataInfo) of the family's training ("train") or evaluation ("eval") split."""
    roots = family_cls.streams(cfg, which)  # {ONE: data.root} unless the family reads several
    split = cfg.data.train_split if which == "train" else cfg.data.eval_split
    out = {}
    for name, root in roots.items():
        info = load_info(dataclasses.replace(cfg.data, root=root))
        out[name] = (split_urls(info, split, f"data.{which}_split"), info)
    return out


def unnamed(batches: dict):
    """A single stream's batch as it is; several as {name: batch}."""
    return batches[ONE] if list(batches) == [ONE] else batches


def frozen_copies(nets: dict, acc) -> dict:
    """Eval-mode copies of the nets with rank 0's buffers on every rank (on CPU BatchNorm statistics
    stay per rank; DDP keeps the weights equal), under DeepSpeed with the fp32 master weights. A
    collective: every rank calls it at the same step."""
    out = {}
    for name, net in nets.items():
        copied = copy.deepcopy(acc.unwrap_model(net, keep_torch_compile=False)).eval().float()  # fp32 even where DeepSpeed trains in bf16/fp16
        if acc.state.deepspeed_plugin is not None:  # the fp32 masters, as the checkpoint holds (a collective)
            copied.load_state_dict(master_state_dict(acc, net))
        net = copied
        if acc.num_processes > 1:
            for buf in net.buffers():
                buf.copy_(broadcast(buf.clone(), from_process=0))
        out[name] = net
    return out


@torch.no_grad()
def eval_sums(family, models, evals, cfg, rank=0, world=1, device="cpu") -> dict[str, torch.Tensor]:
    """This rank's share (sample j of each split goes to rank j % world) of the family's sums, in float64."""
    sums: dict[str, torch.Tensor] = {}
    for stream, (urls, info) in evals.items():
        for batch in eval_batches(urls, cfg.train.batch_size, info, cfg.data.image_size, rank, world,
                                  cfg.data.attrs, crop=cfg.data.crop):
            for k, v in family.evaluate(to_device(batch, device), models).items():
                key = f"{stream}/{k}" if stream else k
                sums[key] = sums.get(key, 0) + v.double()
    return sums


def evaluate(family, models, evals, cfg, acc) -> dict:
    sums = eval_sums(family, models, evals, cfg, acc.process_index, acc.num_processes, acc.device)
    names = sorted(set(sums).union(*gather_object([list(sums)])))  # a rank with no samples still joins
    zero = torch.zeros((), dtype=torch.float64, device=acc.device)
    totals = acc.reduce(torch.stack([sums.get(n, zero) for n in names]), reduction="sum").tolist()
    return {k: round(v, 6) for k, v in family.finish_eval(dict(zip(names, totals))).items()}


def first_samples(evals, n: int, cfg, device) -> dict:
    """The first n samples of every eval split, for figures (main process only)."""
    return {name: to_device(next(eval_batches(urls, n, info, cfg.data.image_size, attrs=cfg.data.attrs,
                                                          crop=cfg.data.crop)), device)
            for name, (urls, info) in evals.items()}


def one_engine(acc, cfg, nets: dict, optimizer, schedule: list):
    """DeepSpeed drives one model per Accelerator, and a single-objective family steps all its nets with
    one optimizer anyway: hand the engine the nets as one ModuleDict, and let the family call each net
    directly. Under ZeRO 1-2 every rank holds whole parameters and the engine reduces gradients from
    hooks on them, so a direct call trains through the engine; ZeRO-3 would need the engine's forward."""
    if acc.state.deepspeed_plugin.zero_stage == 3:
        raise ConfigError(f"DeepSpeed ZeRO-3 partitions parameters, and family '{cfg.family}' calls its "
                          f"{len(nets)} nets ({', '.join(nets)}) one by one. Use launch/deepspeed/zero2.yaml "
                          f"(or zero1.yaml)")
    engine, opt, *schedule = acc.prepare(torch.nn.ModuleDict(nets), optimizer, *schedule)
    return {name: engine.module[name] for name in nets}, opt, schedule


def engine_dtype(acc) -> torch.dtype | None:
    """Under DeepSpeed with bf16/fp16 the engine holds the nets' weights in that dtype and, unlike DDP
    under Accelerate, wraps no autocast around forward: the batches' images must be cast to it."""
    if acc.state.deepspeed_plugin is None:
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(acc.mixed_precision))


def train(cfg, resume: str | None = None) -> str:
    acc = make_accelerator(cfg)
    run = Run(cfg, acc, resume)
    family_cls = family_class(cfg.family)
    trains, evals = streams(family_cls, cfg, "train"), streams(family_cls, cfg, "eval")
    info = next(iter(evals.values()))[1]  # what the nets are built for (DANN: the source domain)
    set_seed(cfg.run.seed)  # identical initial weights on every rank
    family = family_cls(cfg, info, acc.device)
    if cfg.train.cuda_graph:
        raise ConfigError(f"train.cuda_graph captures the adversarial loop's phases; family '{cfg.family}' trains "
                          f"in the single-objective loop: set train.cuda_graph=false")
    if cfg.train.ema_kimg > 0:
        raise ConfigError(f"train.ema_kimg keeps an EMA of a GAN generator for its samples; family "
                          f"'{cfg.family}' trains in the single-objective loop, which keeps none: set train.ema_kimg=0")
    family.nets = prepare_nets.before_prepare(family.nets, cfg, acc)
    names = list(family.nets)
    deepspeed = acc.state.deepspeed_plugin is not None
    # fused kernels (also the device-side skip of non-finite steps); DeepSpeed steps its own optimizer
    optimizer = build_optimizer([p for n in names for p in family.nets[n].parameters()], cfg.optim, cfg.optim.lr,
                                fused=cfg.train.fused_optim and not deepspeed)
    last = cfg.train.steps
    schedule = [LambdaLR(optimizer, lambda s: family.lr_factor(s / last))] if family.lr_factor is not None else []
    if deepspeed and len(names) > 1:
        nets, opt, schedule = one_engine(acc, cfg, family.nets, optimizer, schedule)
    else:
        prepared = acc.prepare(*family.nets.values(), optimizer, *schedule)
        nets, opt, schedule = dict(zip(names, prepared[:len(names)])), prepared[len(names)], prepared[len(names) + 1:]
    nets = prepare_nets.after_prepare(nets, cfg, acc)
    state = TrainState()
    acc.register_for_checkpointing(state)
    meta = checkpoint_meta(acc, names, ["train_state"], info)
    if not run.resume():
        set_seed(cfg.run.seed + acc.process_index)  # each rank draws its own noise from here on

    loaders = {name: iter(train_loader(urls, cfg.train.batch_size, stream_info, cfg.data, cfg.run.seed + i,
                                       acc.process_index, acc.num_processes, start_batch=state.batches,
                                       pin_memory=acc.device.type == "cuda", device=acc.device))
               for i, (name, (urls, stream_info)) in enumerate(trains.items())}
    guard = Guard(acc, cfg, run)
    # Gradients are all-reduced before the check (fp16 under DDP: the GradScaler); under DeepSpeed the
    # engine steps inside backward and skips a non-finite step itself, and the stepper counts its skips.
    stepper = Stepper(acc, cfg, guard, nets, {ONE: Group(tuple(names), [opt])})
    half = engine_dtype(acc)
    images = 0
    run.start(state.step)
    guard.repair_buffers(list(nets.values()))  # remembers the buffers a non-finite step's forward may spoil
    for step in range(state.step, last):
        family.set_progress(step / last)
        for _ in range(cfg.train.grad_accum):  # micro-batches of one optimizer step
            with stepper.micro_batch(ONE):
                batches = {name: to_device(next(stream), acc.device) for name, stream in loaders.items()}
                for b in batches.values():  # bad input the stream passed over since the last batch
                    stats.count("data/skipped", b.pop("skipped", 0))
                state.batches += 1
                images += sum(len(b["image"]) for b in batches.values())
                if half is not None:
                    batches = {n: {k: v.to(half) if v.is_floating_point() else v for k, v in b.items()}
                               for n, b in batches.items()}
                with stepper.autocast():
                    terms = family.loss(unnamed(batches), nets)
                stepper.step(terms, ONE)
        stepper.end_iteration()
        for sched in schedule:
            sched.step()
        state.step = done = step + 1
        run.bar.update(1)

        logging, saving = every(done, cfg.log.every, last), every(done, cfg.run.checkpoint_every, last)
        if logging:
            run.log(done, images, {"lr": schedule[0].get_last_lr()[0]} if schedule else None)
            images = 0
        if logging or saving:
            guard.check(done)  # too many non-finite steps in a row: stop before saving
        evaluating = every(done, cfg.eval.every, last) or done == last
        drawing = family.figures is not None and every(done, cfg.log.sample_every, last)
        if logging or saving or evaluating or drawing:  # buffers are read here: none left non-finite
            guard.repair_buffers(list(nets.values()))
        if evaluating or drawing:
            models = frozen_copies(nets, acc)
            if evaluating:
                run.write_eval(done, evaluate(family, models, evals, cfg, acc))
            if drawing and acc.is_main_process:
                with torch.no_grad():
                    family.figures(models, unnamed(first_samples(evals, family.figure_samples, cfg, acc.device)),
                                   run.dir, done)
        # a collective and a deliberate host sync: only at these boundaries, the same steps on every rank
        preempted = (logging or saving) and guard.preempted()
        if saving or preempted:
            run.save(done, meta, nets)
        if preempted:
            guard.requeue(done)
            break
    run.check_ranks(nets)
    run.finish()
    return str(run.dir)
