"""Recipes: YAML -> a typed, frozen dataclass tree, with dotted command-line overrides.

    python launch/train.py recipes/quickstart.yaml optim.lr_d=1e-4 train.steps=500 --dry-run

Every section is a frozen dataclass; the `model` section's type is chosen by `family`
(each family file declares its own `ModelConfig`). Unknown keys, wrong types and unknown
family names raise `ConfigError` naming the key and the valid choices.

Load recipes with distgen.recipes.load / from_dict, which look the family up by name and call
`build` here: this module never imports the family registry (the families import it).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from distgen.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    root: str = "data/digits"  # shard folder with index.json, or a shard URL pattern
    index: str = ""  # index.json to use when root is a URL pattern ("" = next to the shards)
    train_split: str = "train"
    eval_split: str = "test"
    image_size: int = 0  # 0 = the size the shards were written at
    attrs: tuple[str, ...] = ()  # attributes (by name) to put in batch["attrs"]; () = all in the index
    shuffle_buffer: int = 512  # samples each reader (rank x worker) shuffles through, within an epoch
    num_workers: int = -1  # DataLoader workers per process; -1 = auto: its CPUs less one (distgen/data/workers.py)
    # split: every epoch deals the samples out to ranks x workers, each sample once (any number of readers
    # for any number of shards, with per-shard counts in index.json); resampled: each reader draws shards with replacement (large shard sets, elastic jobs)
    mode: Literal["split", "resampled"] = "split"
    channels: Literal[0, 1, 3] = 0  # 0 = as stored; 1 = grey; 3 = RGB (grey repeated)
    crop: int = 0  # square crop side in stored pixels, taken before resizing to image_size (0 = none)
    random_crop: bool = False  # training: crop at a random place (evaluation always crops the centre)
    hflip: bool = False  # training: flip half the images left-right
    # none: stream the shards; ram: read this process's share of the split once into one uint8 tensor in
    # host memory and serve batches from it; device: the same tensor on the training device (GPU)
    cache: Literal["none", "ram", "device"] = "none"
    max_skip_fraction: float = 0.01  # stop when a reader skips more than this share of its samples (corrupt
    #                                  images, truncated shards), measured over at least 1,000 samples
    source: str = ""  # domain adaptation (dann): source shard folder ("" = data.root)
    target: str = ""  # domain adaptation (dann): target shard folder (its labels are read only to measure)
    domain_a: str = ""  # unpaired image-to-image (cyclegan): shard folder of domain A
    domain_b: str = ""  # ... and of domain B (the maps converter writes OUT/A and OUT/B)


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adam", "rmsprop", "sgd"] = "adam"
    lr: float = 2e-4  # single-objective families
    lr_g: float = 2e-4  # adversarial families: generator
    lr_d: float = 2e-4  # adversarial families: discriminator / critic
    beta1: float = 0.5
    beta2: float = 0.999
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    name_g: str = ""  # per-network optimizer for adversarial families ("" = optim.name)
    name_d: str = ""
    betas_g: tuple[float, ...] = ()  # per-network (beta1, beta2) (() = optim.beta1, optim.beta2)
    betas_d: tuple[float, ...] = ()
    decay_start: float = 1.0  # fraction of train.steps after which every lr decays linearly to 0 (1 = never)


@dataclass(frozen=True)
class PhaseConfig:
    name: str  # a phase the family defines, e.g. D or G
    repeat: int = 1  # e.g. n_critic for WGAN-GP
    every: int = 1  # run this phase on iterations where iteration % every == 0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # generator steps (adversarial) or optimizer steps (single objective)
    batch_size: int = 64  # per process
    phases: tuple[PhaseConfig, ...] = ()  # () = the family's default alternation
    # generator EMA for samples and evaluation (distgen/ema.py): its half-life in thousands of images,
    # counting the global batch (batch_size x processes x grad_accum) per generator step; 0 = off
    ema_kimg: float = 0.0
    ema_rampup: float = 0.05  # the half-life is at most this fraction of the images seen so far (0 = no ramp-up)
    grad_accum: int = 1  # micro-batches accumulated into every optimizer step (of every phase)
    sync_bn: bool = True  # BatchNorm over every process's batch (distgen/sync_batchnorm.py), any device
    max_nonfinite: int = 10  # skip steps with non-finite gradients; stop after this many in a row (0 = no check)
    # speed switches (docs/benchmarks.md says what they buy and where):
    channels_last: bool = False  # NHWC memory format for nets and images (tensor cores on GPUs)
    compile: str = ""  # torch.compile backend for the nets ("" = eager; "inductor"; nets that need
    #                    double backward, e.g. a gradient-penalty critic, stay eager)
    tf32: bool = True  # TensorFloat-32 matmuls/convolutions on Ampere+ GPUs
    cudnn_benchmark: bool = True  # cuDNN times its algorithms once per input shape (fixed shapes: faster)
    # capture each phase's micro-batch step (forward, backward, optimizer step) as a CUDA graph and replay
    # it: the host launches one graph instead of hundreds of kernels (CUDA only; distgen/loops/capture.py)
    cuda_graph: bool = False
    fused_optim: bool = True  # fused Adam/SGD kernels (CPU, CUDA): faster; they skip non-finite steps on the device
    # CPU threads of this process's kernels (0 = as launched: OMP_NUM_THREADS, accelerate's
    # --num_cpu_threads_per_process). A CPU convolution splits its sums by thread, so the trained
    # weights depend on the thread count; a recipe that must give the same weights from the same
    # command on any CPU machine of a kind (the digit judge) pins it
    threads: int = 0


@dataclass(frozen=True)
class RunConfig:
    dir: str = ""  # "" = runs/<recipe>/<UTC timestamp>
    seed: int = 0
    checkpoint_every: int = 500
    keep_last: int = 3  # step checkpoints kept on disk (0 = keep all)
    collective_timeout: int = 600  # seconds a rank waits in a collective before the run fails (a dead peer)
    accept_new_data_order: bool = False  # resume under another world size / data.num_workers / precision


@dataclass(frozen=True)
class WandbConfig:
    enabled: bool = False
    project: str = "distgen"
    entity: str = ""
    group: str = ""
    tags: tuple[str, ...] = ()
    # What a comparison of this W&B group groups by and shows (launch/compare.py --wandb --group):
    # launch/sweep.py sets them to the study's table, else to its swept keys other than run.seed
    group_by: tuple[str, ...] = ()
    group_metrics: tuple[str, ...] = ()
    mode: Literal["auto", "online", "offline"] = "auto"  # auto: offline (into the run dir) without an API key


@dataclass(frozen=True)
class LogConfig:
    every: int = 50
    sample_every: int = 500
    wandb: WandbConfig = field(default_factory=lambda: WandbConfig())
    # TensorBoard event files in RUN_DIR/tensorboard (no account): the metrics, eval results and sample
    # grids W&B gets (`tensorboard --logdir RUN_DIR/tensorboard`, or --logdir runs for every run)
    tensorboard: bool = False


@dataclass(frozen=True)
class EvalConfig:
    every: int = 0  # 0 = only at the end of training (single-objective loop)
    num_samples: int = 1000
    classifier: str = ""  # run dir of a `classifier` run, the judge for the `acc` metric
    metrics: tuple[str, ...] = ("fid",)  # image metrics every eval.every steps (GAN families): fid isc kid prc
    inception_weights: str = ""  # local InceptionV3 weights ("" = $DISTGEN_INCEPTION_WEIGHTS)
    timeout: int = 3600  # seconds the ranks wait for rank 0's FID/IS/KID/PRC in training (not run.collective_timeout)


@dataclass(frozen=True)
class Config:
    family: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    recipe: str = ""  # the recipe's name (file stem); set by load()


# ----------------------------------------------------------------------------- loading


def read(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """A recipe file as a raw dict, with `key=value` overrides applied (typed by `build`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe file '{path}' does not exist; recipes live in recipes/*.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe '{path}' is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe '{path}' must be a mapping of sections (family, model, data, ...)")
    raw.setdefault("recipe", path.stem)
    for item in overrides:
        apply_override(raw, item)
    return raw


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in the raw recipe dict; the value is parsed as YAML (1e-4, true, [1, 2])."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}' must look like key=value, e.g. optim.lr_d=1e-4")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{item}': '{'.'.join(parts[:i + 1])}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def build(raw: dict, family_cls) -> Config:
    """The typed config of `raw` for the family class `family_cls` (its ModelConfig types the model
    section, its PHASES are the valid train.phases). distgen.recipes looks the class up by name:
    this module never imports the family registry (the families import it)."""
    _refuse_old_keys(raw)
    raw = dict(raw)
    model = _build(family_cls.ModelConfig, raw.pop("model", None) or {}, "model")
    cfg = dataclasses.replace(_build(Config, {**raw, "model": None}, ""), model=model)
    check(cfg, family_cls)
    return cfg


def _refuse_old_keys(raw: dict) -> None:
    """Keys whose meaning changed: a clear error with the new key, never a silent reinterpretation."""
    train = raw.get("train") or {}
    if isinstance(train, dict) and "ema" in train:
        decay = train["ema"]
        hint = ""
        b, k = train.get("batch_size", TrainConfig.batch_size), train.get("grad_accum", 1)
        if isinstance(decay, (int, float)) and 0 < decay < 1 and isinstance(b, int) and isinstance(k, int):
            hint = (f"; decay {decay} with batch_size {b} and grad_accum {k} on P processes is "
                    f"train.ema_kimg={decay_to_kimg(decay, b * k):.4g} x P")
        raise ConfigError(f"'train.ema' (a decay per step) was replaced by 'train.ema_kimg', the EMA half-life in "
                          f"thousands of images, which means the same at any batch size and GPU count{hint}; "
                          f"remove train.ema (train.ema_kimg=0 turns the EMA off)")


def decay_to_kimg(decay: float, images_per_step: int) -> float:
    """The EMA half-life in thousands of images of a per-step decay at `images_per_step`."""
    return images_per_step * math.log(0.5) / math.log(decay) / 1000 if 0 < decay < 1 else 0.0


def upgrade(raw: dict) -> dict:
    """The raw config.yaml of a run dir written by an older distgen, in today's keys (for reading
    old runs: launch/evaluate.py, report.py). Recipes get `_refuse_old_keys`' error instead."""
    train = raw.get("train")
    if isinstance(train, dict) and "ema" in train:
        train = dict(train)
        images = int(train.get("batch_size", TrainConfig.batch_size)) * int(train.get("grad_accum", 1))
        train["ema_kimg"] = round(decay_to_kimg(float(train.pop("ema")), images), 4)
        raw = {**raw, "train": train}
    return raw


def to_dict(cfg: Config) -> dict:
    """Plain dict (lists, not tuples) suitable for YAML and W&B."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ----------------------------------------------------------------------------- typing


def _build(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"'{where or 'recipe'}' must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in raw if k not in fields]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown key '{key}'; valid keys{' under ' + repr(where) if where else ''}: "
                          f"{', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name in raw:
            if f.type == "Any" or hints[name] is Any:
                kwargs[name] = raw[name]
            else:
                kwargs[name] = _coerce(hints[name], raw[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key '{key}'")
    return cls(**kwargs)


def _coerce(tp, value, key):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"'{key}' is {value!r}; valid choices: {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        return tuple(_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"config field {key}: unions are not supported")  # internal invariant
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"'{key}' must be true or false, got {value!r}")
    if tp is int:
        if key == "data.num_workers" and value == "auto":  # data.num_workers=auto is -1 (distgen/data/workers.py)
            return -1
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"'{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"'{key}' must be a string, got {value!r}")
    raise TypeError(f"config field {key}: unsupported type {tp}")  # internal invariant


def check(cfg: Config, family) -> None:
    """Range and cross-key checks that types alone cannot express."""
    for key, value in (("train.steps", cfg.train.steps), ("train.batch_size", cfg.train.batch_size),
                       ("log.every", cfg.log.every), ("log.sample_every", cfg.log.sample_every),
                       ("run.checkpoint_every", cfg.run.checkpoint_every), ("eval.timeout", cfg.eval.timeout)):
        if value <= 0:
            raise ConfigError(f"'{key}' must be > 0, got {value}")
    if cfg.train.threads < 0:
        raise ConfigError(f"'train.threads' must be >= 0 (0 = as launched), got {cfg.train.threads}")
    check_optim(cfg.optim)
    if not 0.0 <= cfg.optim.decay_start <= 1.0:
        raise ConfigError(f"'optim.decay_start' must be in [0, 1], got {cfg.optim.decay_start}")
    if cfg.train.grad_accum < 1:
        raise ConfigError(f"'train.grad_accum' must be >= 1, got {cfg.train.grad_accum}")
    for net in ("g", "d"):
        name, betas = getattr(cfg.optim, f"name_{net}"), getattr(cfg.optim, f"betas_{net}")
        if name not in ("", "adam", "rmsprop", "sgd"):
            raise ConfigError(f"'optim.name_{net}' is {name!r}; valid choices: adam, rmsprop, sgd (or empty)")
        if len(betas) not in (0, 2):
            raise ConfigError(f"'optim.betas_{net}' must be [beta1, beta2] or empty, got {list(betas)}")
    if cfg.data.crop < 0 or cfg.data.shuffle_buffer < 1 or cfg.data.num_workers < -1:
        raise ConfigError(f"'data.crop' must be >= 0, 'data.shuffle_buffer' >= 1 and 'data.num_workers' >= 0 (or -1: "
                          f"auto, from the CPUs); got "
                          f"{cfg.data.crop}, {cfg.data.shuffle_buffer}, {cfg.data.num_workers}")
    if cfg.data.random_crop and not cfg.data.crop:
        raise ConfigError("'data.random_crop' needs a crop size: set data.crop=PX (e.g. data.crop=56 of 64)")
    if not 0.0 <= cfg.data.max_skip_fraction <= 1.0:
        raise ConfigError(f"'data.max_skip_fraction' must be in [0, 1], got {cfg.data.max_skip_fraction}")
    if cfg.train.ema_kimg < 0 or cfg.train.ema_rampup < 0:
        raise ConfigError(f"'train.ema_kimg' and 'train.ema_rampup' must be >= 0, got {cfg.train.ema_kimg}, "
                          f"{cfg.train.ema_rampup}")
    for i, phase in enumerate(cfg.train.phases):
        if phase.repeat <= 0 or phase.every <= 0:
            raise ConfigError(f"'train.phases[{i}]' needs repeat >= 1 and every >= 1, got {phase}")
    phases = getattr(family, "PHASES", {})
    for i, phase in enumerate(cfg.train.phases):
        if phase.name not in phases:
            raise ConfigError(f"'train.phases[{i}].name' is {phase.name!r}; family '{cfg.family}' has phases: "
                              f"{', '.join(phases) or 'none (single-objective family)'}")


def check_optim(optim: OptimConfig) -> None:
    """The optimiser's numbers in the ranges torch accepts (a negative lr is otherwise a traceback from
    inside torch.optim once the loop builds the optimizer), each error naming the key."""
    for key in ("lr", "lr_g", "lr_d"):
        value = getattr(optim, key)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"'optim.{key}' must be a number > 0, got {value}")
    betas = [("optim.beta1", optim.beta1), ("optim.beta2", optim.beta2)]
    betas += [(f"optim.betas_{net}[{i}]", b) for net in ("g", "d")
              for i, b in enumerate(getattr(optim, f"betas_{net}"))]
    for key, value in betas:
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"'{key}' must be in [0, 1), got {value}")
    if not 0.0 <= optim.momentum < 1.0:
        raise ConfigError(f"'optim.momentum' must be in [0, 1), got {optim.momentum}")
    if not (math.isfinite(optim.weight_decay) and optim.weight_decay >= 0):
        raise ConfigError(f"'optim.weight_decay' must be >= 0, got {optim.weight_decay}")
