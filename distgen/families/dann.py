"""`dann`: domain-adversarial training (Ganin et al., JMLR 2016): a feature extractor, a label predictor,
and a domain classifier behind a gradient-reversal layer.

    python -m shards digits --out data/digits && python -m shards digits-m --out data/digits-m
    python launch/train.py recipes/dann_digits.yaml                           # model.mode=dann
    python launch/train.py recipes/dann_digits.yaml model.mode=source_only
    python launch/train.py recipes/dann_digits.yaml model.mode=target_only
    python launch/dann_table.py RUN_DIR ...                                  # the three rows, per scenario

Data: `data.source` (empty = `data.root`) and `data.target`, two shard folders with the same classes.
Both domains go through the nets with `model.channels` channels (grey is repeated to RGB, RGB averaged
to grey) and, with `model.center: image`, each image minus its own per-channel mean (the paper's
only preprocessing was mean subtraction; per image it needs no statistics of either domain).

Modes (`model.mode`), the rows of the reports' table:
  source_only  labelled source batches only; no domain classifier
  dann         labelled source + unlabelled target batches: class loss on the source, domain loss on
               both through the gradient-reversal layer, lambda(p) = 2 / (1 + exp(-10 p)) - 1
  target_only  labelled target batches only (the upper bound)
Target labels are never read in source_only and dann training; no mode selects a checkpoint by
them (the last step is what is reported). As in the Transfer-Learning-Library's DANN, source and
target batches go through the feature extractor together, the domain classifier is trained by
binary cross-entropy on both, and the learning rate follows lr / (1 + 10 p)^0.75 (`model.lr_schedule`).

Evaluation (eval/step_<N>.json): `source_acc` and `target_acc` over the whole test split of each
domain, with the mean test cross-entropy (`source_loss`, `target_loss`) and `source_count`, `target_count`. Figures (every log.sample_every steps): t-SNE of the
features of the first `model.tsne_points` test images of both domains, coloured by class
(eval/tsne_class_step_<N>.png) and by domain (eval/tsne_domain_step_<N>.png).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from distgen import figures, stats
from distgen.config import DataConfig
from distgen.data import load_info
from distgen.errors import ConfigError, DataError
from distgen.families.base import Family


@dataclass(frozen=True)
class ModelConfig:
    mode: Literal["source_only", "dann", "target_only"] = "dann"
    channels: int = 3  # the nets' input channels; both domains are converted to it
    widths: tuple[int, ...] = (32, 48)  # feature extractor: per block 5x5 conv (no padding), 2x2 max-pool, ReLU
    batch_norm: bool = False  # BatchNorm after every conv and every hidden layer of the heads
    hidden: int = 100  # units of the hidden layers of the label predictor (two) and domain classifier (one)
    dropout: float = 0.0  # Dropout2d in the last conv block and dropout after the label predictor's first layer
    domain_weight: float = 1.0  # weight of the domain loss (the Transfer-Learning-Library's trade_off)
    grl_gamma: float = 10.0  # lambda(p) = 2 / (1 + exp(-grl_gamma p)) - 1
    lr_schedule: Literal["dann", "constant"] = "dann"  # dann: optim.lr / (1 + 10 p)^0.75
    center: Literal["image", "none"] = "image"  # subtract each image's per-channel mean
    tsne_points: int = 500  # test images per domain in the t-SNE figures


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def reverse_gradient(x: torch.Tensor, coeff: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by -coeff (the gradient-reversal layer)."""
    return _ReverseGradient.apply(x, coeff)


def grl_lambda(p: float, gamma: float = 10.0) -> float:
    """The paper's schedule: 0 at the start of training, close to 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    if channels == 1:
        return x.mean(1, keepdim=True)
    raise DataError(f"cannot convert {x.shape[1]}-channel images to model.channels={channels}")


def feature_extractor(m: ModelConfig, size: int) -> tuple[nn.Module, int]:
    """The DANN paper's digit net (with BatchNorm and dropout as in common PyTorch DANNs when asked)."""
    layers, c, side = [], m.channels, size
    for i, w in enumerate(m.widths):
        layers += [nn.Conv2d(c, w, 5), *([nn.BatchNorm2d(w)] if m.batch_norm else []),
                   *([nn.Dropout2d(m.dropout)] if m.dropout > 0 and i == len(m.widths) - 1 else []),
                   nn.MaxPool2d(2), nn.ReLU(True)]
        c, side = w, (side - 4) // 2
    if side < 1:
        raise ConfigError(f"model.widths: {len(m.widths)} conv blocks shrink a {size}px image to nothing; use fewer")
    return nn.Sequential(*layers, nn.Flatten()), c * side * side


def head(sizes: list[int], batch_norm: bool, dropout: float = 0.0) -> nn.Sequential:
    """Linear layers; the hidden ones with BatchNorm, ReLU and (after the first) dropout."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers += [*([nn.BatchNorm1d(b)] if batch_norm else []), nn.ReLU(True),
                       *([nn.Dropout(dropout)] if dropout > 0 and i == 0 else [])]
    return nn.Sequential(*layers)


class DANN(Family):
    ModelConfig = ModelConfig

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        self.require_labels()
        m = self.model_cfg
        features, dim = feature_extractor(m, self.image_size)
        self.nets = {"features": features,
                     "classifier": head([dim, m.hidden, m.hidden, info.num_classes], m.batch_norm, m.dropout)}
        if m.mode == "dann":  # only when trained: an unused net would stall DDP's gradient reduction
            self.nets["domain"] = head([dim, m.hidden, 1], m.batch_norm)
        self.figure_samples = m.tsne_points

    # -- data -----------------------------------------------------------------------------------

    @staticmethod
    def streams(cfg, which: str) -> dict[str, str]:
        """Shard folders of the training streams of this mode ("train"), or of both test sets ("eval")."""
        d = cfg.data
        if d.source and d.root not in (d.source, DataConfig.root):
            raise ConfigError(f"data.root is '{d.root}' but data.source is '{d.source}'; for dann the source "
                              f"domain is data.source (data.root only when data.source is empty): set one of them")
        source, target = d.source or d.root, d.target
        if not target:
            raise ConfigError("dann needs a target domain: set data.target to a shard folder, "
                              "e.g. data.target=data/digits-m (python -m shards digits-m --out data/digits-m)")
        infos = {name: load_info(dataclasses.replace(d, root=root)) for name, root in (("source", source),
                                                                                      ("target", target))}
        if infos["source"].class_names != infos["target"].class_names:
            raise DataError(f"data.source '{source}' and data.target '{target}' have different classes: "
                            f"{list(infos['source'].class_names)} vs {list(infos['target'].class_names)}")
        if not d.image_size and infos["source"].image_size != infos["target"].image_size:
            raise DataError(f"data.source has {infos['source'].image_size}px images, data.target "
                            f"{infos['target'].image_size}px: set data.image_size to resize both, e.g. 32")
        if which == "eval":
            return {"source": source, "target": target}
        return {"source_only": {"source": source}, "dann": {"source": source, "target": target},
                "target_only": {"target": target}}[cfg.model.mode]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = to_channels(x, self.model_cfg.channels)
        return x - x.mean((2, 3), keepdim=True) if self.model_cfg.center == "image" else x

    # -- training -------------------------------------------------------------------------------

    def lr_factor(self, p: float) -> float:
        return (1.0 + 10.0 * p) ** -0.75 if self.model_cfg.lr_schedule == "dann" else 1.0

    def loss(self, batches: dict, nets: dict) -> dict[str, torch.Tensor]:
        m = self.model_cfg
        labelled = batches["target" if m.mode == "target_only" else "source"]
        x, y = self.prepare(labelled["image"]), labelled["label"]
        if m.mode != "dann":
            logits = nets["classifier"](nets["features"](x))
            stats.report("acc", (logits.argmax(1) == y).float())
            return {"cls": F.cross_entropy(logits, y)}
        target = self.prepare(batches["target"]["image"])  # images only: target labels are never read
        f = nets["features"](torch.cat([x, target]))
        logits = nets["classifier"](f[:len(x)])
        coeff = grl_lambda(self.progress, m.grl_gamma)
        d = nets["domain"](reverse_gradient(f, coeff)).squeeze(1).float()
        is_target = torch.cat([torch.zeros(len(x), device=d.device), torch.ones(len(target), device=d.device)])
        stats.report("acc", (logits.argmax(1) == y).float())
        stats.report("domain_acc", ((d > 0).float() == is_target).float())
        stats.report("grl_lambda", coeff)
        return {"cls": F.cross_entropy(logits, y),
                "domain": m.domain_weight * F.binary_cross_entropy_with_logits(d, is_target)}

    # -- measurement ----------------------------------------------------------------------------

    def evaluate(self, batch: dict, nets: dict) -> dict[str, torch.Tensor]:
        """Sums over one test batch of either domain; the loop prefixes them with the domain."""
        logits = nets["classifier"](nets["features"](self.prepare(batch["image"]))).float()
        return {"correct": (logits.argmax(1) == batch["label"]).sum().float(),
                "nll": F.cross_entropy(logits, batch["label"], reduction="sum"),
                "count": torch.tensor(float(len(logits)), device=logits.device)}

    @staticmethod
    def finish_eval(sums: dict[str, float]) -> dict:
        out = {}
        for domain in ("source", "target"):
            count = sums.get(f"{domain}/count", 0.0)
            out[f"{domain}_acc"] = sums.get(f"{domain}/correct", 0.0) / max(count, 1.0)
            out[f"{domain}_loss"] = sums.get(f"{domain}/nll", 0.0) / max(count, 1.0)
            out[f"{domain}_count"] = int(count)
        return out

    def figures(self, nets: dict, batches: dict, run_dir: Path, step: int) -> None:
        """t-SNE of the features of both test sets, once, drawn by class and by domain."""
        feats = [nets["features"](self.prepare(batches[d]["image"])) for d in ("source", "target")]
        xy = figures.tsne(torch.cat(feats), self.cfg.run.seed)
        classes = torch.cat([batches["source"]["label"], batches["target"]["label"]]).cpu()
        domains = torch.cat([torch.zeros(len(feats[0]), dtype=torch.long), torch.ones(len(feats[1]), dtype=torch.long)])
        n = f"step {step}, {len(feats[0])} + {len(feats[1])} test images"
        figures.scatter(xy, classes, list(self.info.class_names), run_dir / "eval" / f"tsne_class_step_{step}.png",
                        f"{self.model_cfg.mode}: features by class ({n})")
        figures.scatter(xy, domains, ["source", "target"], run_dir / "eval" / f"tsne_domain_step_{step}.png",
                        f"{self.model_cfg.mode}: features by domain ({n})")
