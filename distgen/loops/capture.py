"""train.cuda_graph: each phase's micro-batch step captured as a CUDA graph and replayed.

    accelerate launch launch/train.py recipes/dcgan_celeba.yaml train.cuda_graph=true

The reports' nets are too small to fill a GPU: a D+G iteration is a few hundred kernels of a few
microseconds each, and the host, not the GPU, sets the pace (docs/benchmarks.md). A CUDA graph records
one phase's whole step once -- the family's loss (forward), backward, the non-finite check, the fused
optimizer step, the guard's bookkeeping and the statistics' accumulation -- and each later step is one
`replay()`: one launch instead of hundreds.

How (PyTorch's "whole network capture" recipe, torch.cuda.graphs):
  - the first `WARMUP` iterations run eagerly on a side stream (cuDNN picks its algorithms, the optimizer
    makes its state, the autograd engine its buffers); the next iteration captures each phase once,
    in phase order, into one shared memory pool, and replays it; from then on every phase is a replay;
  - inputs are static: a phase that reads data copies each new batch into the tensors it was captured
    with; noise is drawn inside the graph (CUDA graphs advance the generator's offset on every replay, so
    each replay draws new noise);
  - the optimizers step with `capturable=True` and a learning rate held in a device tensor, which the
    schedulers update in place; the guard records each step's non-finite flag inside the graph, and the
    statistics are added into their device accumulators inside it (stats.flush at capture; `stats.recount`
    counts each replay);
  - the EMA update (two foreach ops) stays eager, after all phases.
What it cannot capture is refused at start, by name (`check`): a CPU run, fp16 (the GradScaler decides on
the host), several processes (DDP's gradient buckets would need static_graph and NCCL capture: not yet
verified on a multi-GPU machine), train.grad_accum > 1, train.compile, and optimizers without a fused,
capturable kernel (RMSprop, train.fused_optim=false).
`make gpu-check` compares a captured run with an eager one (launch/gpu_check.py, check "cuda_graph").
"""
from __future__ import annotations

import torch

from distgen import stats
from distgen.errors import ConfigError

WARMUP = 3  # eager iterations before capture (the recipe asks for a few; DDP would need 11)


def check(cfg, acc, family) -> None:
    """Refuse, by name, what train.cuda_graph cannot capture."""
    why = None
    if acc.device.type != "cuda":
        why = f"needs CUDA; this run is on {acc.device.type}. Set train.cuda_graph=false"
    elif acc.mixed_precision == "fp16":
        why = ("cannot capture fp16: the GradScaler reads its overflow flag on the host every step. "
               "Use --mixed_precision bf16 (no loss scaling) or train.cuda_graph=false")
    elif acc.num_processes > 1:
        why = (f"is single-process for now ({acc.num_processes} processes here): capturing DDP's all-reduce "
               f"has not been verified on a multi-GPU machine. Set train.cuda_graph=false")
    elif cfg.train.grad_accum > 1:
        why = f"captures one micro-batch per optimizer step; train.grad_accum={cfg.train.grad_accum}: set it to 1"
    elif cfg.train.compile:
        why = "and train.compile are two ways to the same end; choose one (train.compile='' or cuda_graph=false)"
    elif not cfg.train.fused_optim:
        why = "needs fused optimizers (they skip a non-finite step on the device): set train.fused_optim=true"
    elif cfg.train.max_nonfinite <= 0:
        why = None
    if why is None:
        names = {cfg.optim.name_g or cfg.optim.name, cfg.optim.name_d or cfg.optim.name}
        if "rmsprop" in names:
            why = "needs optimizers with a fused kernel (adam, sgd); rmsprop decides each skip on the host"
    if why:
        raise ConfigError(f"train.cuda_graph {why}")


def make_capturable(optimizers: list, device: torch.device) -> None:
    """Optimizers a graph can hold: capturable, with the learning rate in a device tensor that the
    schedulers fill in place (a Python float would be baked into the graph at capture)."""
    for opt in optimizers:
        inner = getattr(opt, "optimizer", opt)
        for group in inner.param_groups:
            group["capturable"] = True
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), device=device)


class CapturedPhases:
    """Runs one micro-batch step of a phase: eagerly during warm-up, then as a replay of its graph."""

    def __init__(self, stepper, family, nets):
        self.stepper, self.family, self.nets = stepper, family, nets
        self.graphs: dict[str, torch.cuda.CUDAGraph] = {}
        self.inputs: dict[str, dict | None] = {}  # the static batch each graph reads
        self.records: dict[str, list] = {}  # what each graph reported (stats.recount after a replay)
        self.pool = None
        self.iterations = 0
        self.side = torch.cuda.Stream()
        stepper.capture_mode = True  # per-step guard record and statistics inside the step

    def _eager(self, phase: str, batch) -> None:
        with self.stepper.micro_batch(phase):
            with self.stepper.autocast():
                terms = self.family.loss(phase, self.nets, batch)
            self.stepper.step(terms, phase)

    def run(self, phase: str, batch) -> None:
        """One micro-batch step of `phase` on `batch` (None for a phase that reads no data)."""
        graph = self.graphs.get(phase)
        if graph is not None:
            static = self.inputs[phase]
            if static is not None:
                for key, value in batch.items():
                    if isinstance(value, torch.Tensor):
                        static[key].copy_(value, non_blocking=True)
            graph.replay()
            stats.recount(self.records[phase])
            return
        if self.iterations < WARMUP:  # warm-up, on a side stream as the recipe asks
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                self._eager(phase, batch)
            torch.cuda.current_stream().wait_stream(self.side)
            return
        self._capture(phase, batch)
        self.run(phase, batch)  # the captured graph did not run the step: replay it once now

    def _capture(self, phase: str, batch) -> None:
        static = None if batch is None else {k: v.clone() if isinstance(v, torch.Tensor) else v
                                             for k, v in batch.items()}
        for opt in self.stepper.groups[phase].optimizers:
            opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        stats.flush()  # nothing eager left pending: what the capture reports is the graph's own
        self.stepper.capture_record = []  # the step flushes its own statistics inside the graph
        torch.cuda.synchronize()  # deliberate: once, before capture
        # thread_local: the DataLoader's pin-memory thread may allocate pinned memory or query events
        # while this thread captures; in the default "global" mode that would invalidate the capture
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            self._eager(phase, static)
            # the accumulation is captured; the Python side recounts it per replay
            record = self.stepper.capture_record + stats.flush()
        stats.recount(record, -1)  # capturing ran nothing
        self.graphs[phase], self.inputs[phase], self.records[phase] = graph, static, record

    def end_iteration(self) -> None:
        self.iterations += 1
