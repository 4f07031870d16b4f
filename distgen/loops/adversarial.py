"""The adversarial loop: every GAN family, driven by a list of phases.

    accelerate launch launch/train.py recipes/quickstart.yaml [key=value ...] [--resume auto]

One iteration walks the phases in order (by default D then G; WGAN-GP repeats D n_critic
times). Each phase takes a batch if it uses data, asks the family for named loss terms, and hands
them to the stepper (distgen/loops/stepper.py, shared with the single-objective loop), which sums
them, runs backward into that phase's nets only and steps (or skips) their optimizers. With
train.grad_accum = k every optimizer step of every phase sees k micro-batches. Mixed precision
comes from `accelerate launch --mixed_precision`. The family never sees Accelerate. Preemption
and the non-finite stop are checked at log and checkpoint boundaries (distgen/loops/guard.py).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from accelerate.utils import set_seed

from distgen import stats
from distgen.config import PhaseConfig
from distgen.data import load_info, split_urls, train_loader
from distgen.ema import EMA
from distgen.errors import ConfigError
from distgen.families.base import PhaseSpec
from distgen.loops.common import Run, TrainState, checkpoint_meta, every, make_accelerator, to_device
from distgen.loops import capture
from distgen.loops import nets as prepare_nets
from distgen.loops.nets import convert_sync_bn  # noqa: F401 (its old home)
from distgen.loops.guard import Guard
from distgen.loops.stepper import Group, Stepper
from distgen.generation import generate, save_grid
from distgen.loops.waiting import LongWait
from distgen.recipes import family_class


@dataclass(frozen=True)
class Phase:
    name: str
    spec: PhaseSpec
    repeat: int = 1
    every: int = 1


def phases_of(cfg, family) -> list[Phase]:
    chosen = cfg.train.phases or [PhaseConfig(n, r) for n, r in family.DEFAULT_PHASES]
    return [Phase(p.name, family.PHASES[p.name], p.repeat, p.every) for p in chosen]


class Streams:
    """The family's training data: one stream from data.root, or the named streams the family
    declares in STREAMS (e.g. CycleGAN's {"A": "domain_a", "B": "domain_b"}), read in lockstep."""

    def __init__(self, cfg, family_cls):
        self.cfg, self.fields = cfg, dict(family_cls.STREAMS) or {"": "root"}
        self.infos = {}
        for key, field in self.fields.items():
            root = getattr(cfg.data, field)
            if not root:
                raise ConfigError(f"family '{cfg.family}' reads data.{field}, which is empty; set "
                                  f"{' and '.join('data.' + f for f in self.fields.values())}")
            self.infos[key] = load_info(replace(cfg.data, root=root))

    @property
    def family_info(self):
        return self.infos[""] if "" in self.infos else self.infos

    def open(self, acc, start_batch: int) -> None:
        cfg = self.cfg
        self.iters = {key: iter(train_loader(
            split_urls(info, cfg.data.train_split, "data.train_split"), cfg.train.batch_size, info, cfg.data,
            cfg.run.seed + i, acc.process_index, acc.num_processes, start_batch=start_batch,
            pin_memory=acc.device.type == "cuda", device=acc.device)) for i, (key, info) in enumerate(self.infos.items())}

    def next(self, device) -> tuple[dict, int]:
        """The next batch (a dict, or a dict of named batches) and how many images it holds."""
        batches = {key: to_device(next(it), device) for key, it in self.iters.items()}
        for b in batches.values():  # bad input the stream passed over since the last batch
            stats.count("data/skipped", b.pop("skipped", 0))
        if self.cfg.train.channels_last:
            for b in batches.values():
                b["image"] = b["image"].contiguous(memory_format=torch.channels_last)
        images = sum(len(b["image"]) for b in batches.values())
        return (batches[""] if "" in batches else batches), images


def linear_decay(cfg):
    """lr factor: 1 until optim.decay_start of the run, then linearly down to 0 at the last step."""
    start = cfg.optim.decay_start * cfg.train.steps
    return lambda step: 1.0 if step < start else max(0.0, 1.0 - (step - start) / max(cfg.train.steps - start, 1))


def evaluate_images(family, cfg, acc, G, wait=None) -> dict:
    """FID/IS/KID/PRC of eval.num_samples generated images, generated and measured in slices across the
    ranks on the accelerator's device; rank 0 then computes the metrics (on that device where
    torch-fidelity can: PRC) while the others wait in `wait` (a LongWait, eval.timeout), not in the
    next step's collective under run.collective_timeout."""
    from distgen.evaluation.fidelity import evaluate_generator
    from distgen.evaluation.reference import default_cache_dir

    # generation follows distgen.generation (a plain-BatchNorm copy, fixed chunks, no collective), so
    # these images are launch/evaluate.py's for the same weights, whatever the number of ranks
    result = evaluate_generator(family, cfg, cfg.eval.metrics, cfg.eval.num_samples, cfg.eval.inception_weights,
                                generator=G, rank=acc.process_index, world_size=acc.num_processes,
                                gather=acc.gather, device=acc.device, cache_dir=default_cache_dir())
    if wait is not None:
        wait()
    return result


def train(cfg, resume: str | None = None) -> str:
    acc = make_accelerator(cfg, style="adversarial")
    run = Run(cfg, acc, resume)
    streams = Streams(cfg, family_class(cfg.family))
    set_seed(cfg.run.seed)  # identical initial weights on every rank
    family = family_class(cfg.family)(cfg, streams.family_info, acc.device)
    if cfg.train.cuda_graph:
        capture.check(cfg, acc, family)  # before anything is built: what it cannot capture, by name
    family.nets = prepare_nets.before_prepare(family.nets, cfg, acc)
    names = list(family.nets)
    optims = [family.optimizer(n, family.nets[n].parameters()) for n in names]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, linear_decay(cfg)) for o in optims]
    prepared = acc.prepare(*family.nets.values(), *optims, *scheds)
    k = len(names)
    nets, opts, scheds = dict(zip(names, prepared[:k])), dict(zip(names, prepared[k:2 * k])), prepared[2 * k:]
    nets = prepare_nets.after_prepare(nets, cfg, acc, family.EAGER)
    G = acc.unwrap_model(nets[family.GENERATOR], keep_torch_compile=False)
    # half-life in images: each generator step trains on the global batch
    ema = (EMA(G, cfg.train.ema_kimg, cfg.train.ema_rampup, cfg.train.batch_size * acc.num_processes *
               cfg.train.grad_accum) if cfg.train.ema_kimg > 0 else None)
    state = TrainState()
    extra = {name: obj for name, obj in (("train_state", state), ("ema", ema)) if obj is not None}
    acc.register_for_checkpointing(*extra.values())
    if family.PER_RANK_STATE:  # e.g. CycleGAN's image pools: each rank pools its own fakes
        run.per_rank["family"] = family
    meta = checkpoint_meta(acc, names, list(extra), streams.family_info)
    if not run.resume():
        set_seed(cfg.run.seed + acc.process_index)  # each rank draws its own noise from here on

    phases = phases_of(cfg, family)
    streams.open(acc, state.batches)
    guard = Guard(acc, cfg, run)
    stepper = Stepper(acc, cfg, guard, nets, {p.name: Group(p.spec.nets, [opts[n] for n in p.spec.nets])
                                              for p in phases})
    captured = None
    if cfg.train.cuda_graph:
        capture.make_capturable(list(opts.values()), acc.device)
        captured = capture.CapturedPhases(stepper, family, nets)
    if cfg.eval.every > 0:  # fail now, not hours in, when FID cannot run
        from distgen.evaluation.inception import resolve_weights

        resolve_weights(cfg.eval.inception_weights)
    wait = LongWait(cfg.eval.timeout) if cfg.eval.every > 0 else None  # every rank: it makes a process group
    grid_inputs, grid_cols = family.grid_inputs(cfg.run.seed)
    last, images = cfg.train.steps, 0
    run.start(state.step)
    watched = list(nets.values()) + ([ema.module] if ema is not None else [])
    guard.repair_buffers(watched)  # remembers the buffers a non-finite step's forward may spoil
    for step in range(state.step, last):
        for phase in phases:
            if step % phase.every:
                continue
            for _ in range(phase.repeat * cfg.train.grad_accum):  # grad_accum micro-batches per optimizer step
                batch = None
                if phase.spec.uses_data:
                    batch, n_images = streams.next(acc.device)
                    state.batches += 1
                    images += n_images
                if captured is not None:  # train.cuda_graph: a replay of this phase's captured step
                    captured.run(phase.name, batch)
                    continue
                with stepper.micro_batch(phase.name):
                    with stepper.autocast():  # one autocast region per micro-batch of a phase
                        terms = family.loss(phase.name, nets, batch)
                    stepper.step(terms, phase.name)
        stepper.end_iteration()
        if captured is not None:
            captured.end_iteration()
        for sched in scheds:
            sched.step()
        if ema is not None:
            ema.update(G)
        state.step = done = step + 1
        run.bar.update(1)

        logging, saving = every(done, cfg.log.every, last), every(done, cfg.run.checkpoint_every, last)
        if logging:
            run.log(done, images)
            images = 0
        if logging or saving:
            guard.check(done)  # too many non-finite steps in a row: stop before saving
        sampling = every(done, cfg.log.sample_every, last)
        evaluating = cfg.eval.every > 0 and (done % cfg.eval.every == 0 or done == last)
        if logging or saving or sampling or evaluating:  # buffers are read here: none left non-finite
            guard.repair_buffers(watched)
        if sampling and acc.is_main_process:  # no collective (distgen.generation)
            sampler = ema.module if ema is not None else G
            grid = save_grid(generate(family, sampler, grid_inputs), run.dir / "samples" / f"step_{done}.png",
                             grid_cols)
            run.log_image(done, "samples", grid)
        if evaluating:
            run.write_eval(done, evaluate_images(family, cfg, acc, ema.module if ema is not None else G,
                                                        wait))
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
