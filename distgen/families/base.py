"""What every family file provides (the family contract), and the small pieces they share.

A family owns its networks (plain PyTorch) and its losses. `loss` returns named terms that are
already weighted; the loop's stepper (distgen/loops/stepper.py) sums them, calls backward and
steps. Losses never call backward and never see ranks; `nets` are the (possibly DDP-wrapped)
modules to run forward.

Required of every family (class `Family` below): `ModelConfig`, `__init__(cfg, info, device)`
filling `self.nets`, and `loss`:
  - adversarial loop (STYLE "adversarial"): `loss(phase, nets, batch)`, PHASES, DEFAULT_PHASES,
    GENERATOR, `optimizer(net, params)`, `grid_inputs(seed)`, `generate(G, inputs)`;
  - single-objective loop (STYLE "single"): `loss(batch, nets)`, `evaluate(batch, nets)` (sums over
    one batch) and `finish_eval(sums)`.
Optional hooks, each with its default here (a loop or tool calls them unconditionally; nothing
probes a family with hasattr, and no loop sets attributes on a family):
  - `set_progress(p)`: called by the single-objective loop before every step with p = step /
    train.steps (DANN's GRL schedule, the VAE's KL warm-up read `self.progress`); default stores it.
  - `lr_factor`: None, or a method p -> learning-rate factor (a LambdaLR then drives the optimizer).
  - `streams(cfg, which)`: the shard folders of the single-objective loop's streams; default data.root.
  - `figures`: None, or a method (nets, batch, run_dir, step) drawing figures from the first
    `figure_samples` test samples (main process, eval-mode copies).
  - `PER_RANK_STATE`: True when `state_dict`/`load_state_dict` hold state that differs per rank and
    must be checkpointed (CycleGAN's image pools); default False.
  - `GENERATOR`: the name of the net that generates images (None: the family generates none);
    `grid_inputs`: None or a method seed -> (fixed grid inputs, columns); `class_inputs`: None or a
    method (per_class, seed) -> inputs cycling through the classes (with `num_classes`);
    `eval_inputs(n, seed)`: the generator inputs of FID/IS/KID/PRC's samples (default: classes
    when the family has class_inputs, else noise).
  - Sampling with launch/sample.py (a `Condition`: the user's --class / --attrs / --direction):
    `sample_inputs(n, seed, condition)`: the generator inputs of n images (default: eval_inputs, with
    every class "y" set to --class on class-conditioned families; --attrs refused);
    `translate`: None, or a method (G, images, condition) -> one image per input, for families that
    translate images (CycleGAN, StarGAN), with `input_channels(condition)` the channels it takes.
  - The fp16 loss scale: a family that differentiates through autograd.grad inside its loss (the
    gradient penalty) reads `loss_scale()`, which the stepper sets around every micro-batch
    (`with loss_scaled(scale)`); 1.0 without fp16 loss scaling.
"""
from __future__ import annotations

import math

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn

from distgen.errors import ConfigError
from distgen.families import diffaug


@dataclass(frozen=True)
class GANModelConfig:
    """Keys every GAN family's `model` section has: sizes and the reports' stabilisation switches."""
    z_dim: int = 100
    width: int = 64  # channels of D's first layer and G's last hidden layer
    g_dropout: float = 0.0  # dropout after G's hidden layers (a report's tip)
    real_label: float = 1.0  # soft labels: e.g. 0.9 for one-sided label smoothing (BCE objectives)
    fake_label: float = 0.0
    flip_prob: float = 0.0  # probability of swapping real/fake targets of a D sample (BCE objectives)
    diffaugment: str = ""  # DiffAugment policies for D inputs, e.g. "translation,color,cutout"


_LOSS_SCALE: ContextVar[torch.Tensor | float] = ContextVar("loss_scale", default=1.0)


def loss_scale() -> torch.Tensor | float:
    """The fp16 GradScaler's current scale while the stepper runs a micro-batch (a device tensor, read
    without a host sync), else 1.0. A loss that calls autograd.grad itself scales the outputs by it
    before and divides the gradients by it after (PyTorch AMP's recipe for gradient penalties)."""
    return _LOSS_SCALE.get()


@contextmanager
def loss_scaled(scale: torch.Tensor | float):
    """Within this block `loss_scale()` is `scale` (set by distgen/loops/stepper.py)."""
    token = _LOSS_SCALE.set(scale)
    try:
        yield
    finally:
        _LOSS_SCALE.reset(token)


@dataclass(frozen=True)
class PhaseSpec:
    """One kind of optimisation step: which nets it steps and whether it takes a real batch."""
    nets: tuple[str, ...]
    uses_data: bool = True


@dataclass(frozen=True)
class Condition:
    """What launch/sample.py was asked for: a class (index or name), attribute or tag settings
    (name, value) as typed, a translation direction; empty fields were not given."""
    cls: str | None = None
    attrs: tuple[tuple[str, str], ...] = ()
    direction: str | None = None


class Family:
    STYLE = "single"  # "single" (single-objective loop) or "adversarial" (phase loop)
    ModelConfig: type
    PHASES: dict[str, PhaseSpec] = {}
    DEFAULT_PHASES: tuple[tuple[str, int], ...] = ()  # (phase, repeat) in order
    STREAMS: dict[str, str] = {}  # batch key -> DataConfig field of a shard folder; {} = data.root only
    EAGER: tuple[str, ...] = ()  # nets never compiled (double backward, e.g. a gradient-penalty critic)
    GENERATOR: str | None = None  # the net that generates images; None: the family generates none
    PER_RANK_STATE = False  # state_dict/load_state_dict hold per-rank state to checkpoint (image pools)
    # optional hooks: None when the family has none (see the module docstring)
    lr_factor = None  # p -> learning-rate factor, p = step / train.steps
    figures = None  # (nets, batch, run_dir, step) -> None
    grid_inputs = None  # seed -> (inputs, columns)
    class_inputs = None  # (per_class, seed) -> inputs, with self.num_classes
    translate = None  # (G, images, condition) -> one translated image per input image
    num_classes = 0  # classes the generator is conditioned on (class-conditioned families)
    figure_samples = 0  # test samples `figures` draws from

    def __init__(self, cfg, info, device: torch.device | str = "cpu"):
        self.cfg, self.model_cfg, self.info = cfg, cfg.model, info
        self.device = torch.device(device)
        self.image_size = cfg.data.image_size or info.image_size
        self.nets: dict[str, nn.Module] = {}
        self.progress = 0.0  # step / train.steps, kept current by set_progress

    def lr(self, net: str) -> float:
        """Learning rate of one net's optimizer (recipes set optim.lr, or optim.lr_g / optim.lr_d)."""
        return self.cfg.optim.lr

    def set_progress(self, p: float) -> None:
        """p = step / train.steps, before every step of the single-objective loop."""
        self.progress = p

    @staticmethod
    def streams(cfg, which: str) -> dict[str, str]:
        """Stream name -> shard folder of the single-objective loop's training ("train") or evaluation
        ("eval") data: one unnamed stream of data.root unless a family reads several (DANN)."""
        return {"": cfg.data.root}

    def eval_inputs(self, n: int, seed: int) -> dict:
        """The generator inputs of samples 0..n-1 for FID/IS/KID/PRC, the same on every rank and for every
        world size: class-conditioned families cycle through their classes, others take noise."""
        if self.class_inputs is not None and self.num_classes:
            inputs = self.class_inputs(math.ceil(n / self.num_classes), seed=seed)
            return {k: v[:n] for k, v in inputs.items()}
        return {"z": self.noise(n, torch.Generator().manual_seed(seed))}

    def sample_inputs(self, n: int, seed: int, condition: Condition) -> dict:
        """The generator inputs of n images for launch/sample.py: eval_inputs(n, seed), with the class
        ("y", class_inputs' key) of every image set to condition.cls. Families conditioned on attributes
        or tags override this to read condition.attrs."""
        inputs = self.eval_inputs(n, seed)
        if condition.attrs:
            raise ConfigError(f"--attrs: this {self.cfg.family} run is not conditioned on attributes or tags"
                              + ("; pick a class with --class" if self.num_classes else ""))
        if condition.cls is not None:
            if self.class_inputs is None or not self.num_classes:
                raise ConfigError(f"--class: this {self.cfg.family} run is not class-conditioned; leave --class out")
            inputs["y"] = torch.full((n,), self.class_index(condition.cls), dtype=torch.long, device=self.device)
        return inputs

    def class_index(self, value: str, names: tuple[str, ...] | None = None) -> int:
        """A class given by name (first) or index -> its index; an error lists the names."""
        names = tuple(self.info.class_names if names is None else names)
        if value in names:
            return names.index(value)
        if value.isdigit() and int(value) < len(names):
            return int(value)
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        raise ConfigError(f"--class '{value}': not a class of this run; give an index 0..{len(names) - 1} "
                          f"or a name: {shown}")

    def input_channels(self, condition: Condition) -> int:
        """Channels of the images `translate` takes (launch/sample.py converts the user's images)."""
        return self.info.channels

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise ConfigError(f"family '{self.cfg.family}' samples no noise: its generator needs other inputs "
                          f"(a family can define eval_inputs(n, seed))")

    def state_dict(self) -> dict:
        """Per-rank state to checkpoint (when PER_RANK_STATE)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def require_labels(self) -> None:
        if self.info.num_classes < 2:
            raise ConfigError(f"family '{self.cfg.family}' needs class labels, but data.root "
                              f"'{self.cfg.data.root}' has no class_names in index.json")


class GANFamily(Family):
    STYLE = "adversarial"
    PHASES = {"D": PhaseSpec(("D",), uses_data=True), "G": PhaseSpec(("G",), uses_data=False)}
    DEFAULT_PHASES = (("D", 1), ("G", 1))
    GENERATOR = "G"

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        self._augment = diffaug.parse(cfg.model.diffaugment)
        # a compiled D is traced for the strides of its input: give it one layout (same_layout)
        self._layout = ((torch.channels_last if cfg.train.channels_last else torch.contiguous_format)
                        if cfg.train.compile else None)

    def lr(self, net: str) -> float:
        return self.cfg.optim.lr_g if net == self.GENERATOR else self.cfg.optim.lr_d

    def optimizer(self, net: str, params) -> torch.optim.Optimizer:
        o, which = self.cfg.optim, "g" if net == self.GENERATOR else "d"
        name = getattr(o, f"name_{which}") or o.name
        betas = getattr(o, f"betas_{which}") or (o.beta1, o.beta2)
        return build_optimizer(params, o, self.lr(net), name=name, betas=tuple(betas), fused=self.cfg.train.fused_optim)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees: DiffAugment of real and fake images alike (identity when off), in one memory
        layout when D is compiled (same_layout)."""
        for fn in self._augment:
            x = fn(x)
        return x if self._layout is None else same_layout(x, self._layout)

    def targets(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """D's BCE targets with soft labels and random flips; G's targets use real_label only."""
        m = self.model_cfg
        t = torch.full_like(logits, m.real_label if real else m.fake_label, dtype=torch.float32)
        if m.flip_prob > 0:
            flip = torch.rand(t.shape, device=t.device) < m.flip_prob
            t = torch.where(flip, m.fake_label if real else m.real_label, t)
        return t

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training noise is drawn on the device (no host-to-device copy per step); noise from a (CPU)
        `generator` (fixed grids, evaluation) is the same on every device."""
        if generator is None:
            return torch.randn(n, self.model_cfg.z_dim, 1, 1, device=self.device)
        return torch.randn(n, self.model_cfg.z_dim, 1, 1, generator=generator).to(self.device)

    def grid_inputs(self, seed: int) -> tuple[dict, int]:
        """Fixed inputs for sample grids (the same all run long) and the grid's number of columns:
        32 random samples, as the reports showed them; conditional families override this."""
        return {"z": self.noise(32, torch.Generator().manual_seed(seed))}, 8

    def generate(self, G: nn.Module, inputs: dict) -> torch.Tensor:
        return G(inputs["z"])


def same_layout(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """x with exactly the strides a new tensor of its shape gets in `memory_format` (a copy only when
    they differ). `x.contiguous(memory_format=...)` is not enough: it ignores the stride of a size-1
    dimension, and one-channel images come in two strides (the data stream's batches, NHWC pixels
    permuted to NCHW, have stride 1 on the channel; the generator's output H*W). torch.compile
    guards on that stride, so a D fed real and fake digits recompiles with dynamic shapes, and
    PyTorch 2.11's inductor then predicted the wrong layout for convolution_backward on CUDA
    (AssertionError in assert_size_stride: every one-channel GAN with train.compile=inductor failed
    on an H200; docs/benchmarks.md)."""
    if x.dim() != 4:
        return x
    n, c, h, w = x.shape
    want = (c * h * w, 1, w * c, c) if memory_format == torch.channels_last else (c * h * w, h * w, w, 1)
    return x if x.stride() == want else x.clone(memory_format=memory_format)


def attr_settings(condition: Condition, names: tuple[str, ...]) -> dict[int, float]:
    """--attrs Name=0|1,... -> {index of Name in `names`: 0.0 or 1.0}; an error names the attribute or
    value and the valid choices."""
    out = {}
    for name, value in condition.attrs:
        if name not in names:
            raise ConfigError(f"--attrs: '{name}' is not an attribute of this run; it has: {', '.join(names)}")
        if value not in ("0", "1"):
            raise ConfigError(f"--attrs: {name}={value}; an attribute is 0 (off) or 1 (on)")
        out[names.index(name)] = float(value)
    return out


def bce(logits: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy from logits against a target (1 = real, 0 = fake), in fp32."""
    logits = logits.float()
    if not isinstance(target, torch.Tensor):
        target = torch.full_like(logits, target)
    return nn.functional.binary_cross_entropy_with_logits(logits, target)


def build_optimizer(params, optim_cfg, lr: float, name: str = "", betas: tuple = (),
                    fused: bool = False) -> torch.optim.Optimizer:
    """`fused`: torch's fused kernels (Adam, SGD; CPU and CUDA), which also skip a step with non-finite
    gradients on the device (the stepper's found_inf), with no host sync. RMSprop has none."""
    name, betas = name or optim_cfg.name, betas or (optim_cfg.beta1, optim_cfg.beta2)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=optim_cfg.weight_decay,
                                **({"fused": True} if fused else {}))
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=optim_cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=optim_cfg.momentum, weight_decay=optim_cfg.weight_decay,
                           **({"fused": True} if fused else {}))
