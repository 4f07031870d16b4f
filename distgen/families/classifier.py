"""`classifier`: a small CNN, the judge of generated images (the reports' metric).

    accelerate launch launch/train.py recipes/classifier_digits.yaml            # digit classes
    accelerate launch launch/train.py recipes/classifier_celeba_attrs.yaml      # CelebA attributes

`model.target: class` (default) predicts the class label (cross-entropy; eval `acc`);
`model.target: attrs` predicts the binary attributes `data.attrs` (all in the index when empty), one
logit each (binary cross-entropy; eval `acc` = mean over attributes and `acc_<name>` per attribute).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from distgen import stats
from distgen.errors import ConfigError
from distgen.families.base import Family


@dataclass(frozen=True)
class ModelConfig:
    width: int = 32
    dropout: float = 0.3
    shift: int = 2  # random translation (pixels) of training images, so the judge is not brittle
    target: Literal["class", "attrs"] = "class"  # what it predicts: the class label or the binary attributes


def cnn(channels: int, classes: int, width: int, dropout: float) -> nn.Sequential:
    def block(i, o):
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True),
                nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(True), nn.MaxPool2d(2)]

    return nn.Sequential(*block(channels, width), *block(width, 2 * width), *block(2 * width, 4 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * width, classes))


class Classifier(Family):
    ModelConfig = ModelConfig

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        m = self.model_cfg
        if m.target == "class":
            self.require_labels()
            outputs = info.num_classes
        else:
            if not info.attr_names:
                raise ConfigError(f"model.target=attrs needs attributes, but data.root '{cfg.data.root}' has no "
                                  f"attr_names in index.json; use model.target=class or data with attributes")
            outputs = len(info.attr_names)
        self.nets = {"net": cnn(info.channels, outputs, m.width, m.dropout)}
        if cfg.optim.decay_start < 1.0:  # the single-objective loop drives a LambdaLR with it
            self.lr_factor = self._linear_decay

    def _linear_decay(self, p: float) -> float:
        """optim.decay_start: the lr stays until that fraction of train.steps, then falls linearly to 0."""
        start = self.cfg.optim.decay_start
        return 1.0 if p < start else max(0.0, 1.0 - (p - start) / (1.0 - start))

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        s = self.model_cfg.shift
        if s <= 0:
            return x
        dx, dy = torch.randint(-s, s + 1, (2,)).tolist()
        return torch.roll(F.pad(x, (s, s, s, s), value=-1.0), (dy, dx), (2, 3))[..., s:-s, s:-s]

    def loss(self, batch: dict, nets_: dict) -> dict[str, torch.Tensor]:
        logits = nets_["net"](self._shift(batch["image"]))
        if self.model_cfg.target == "attrs":
            stats.report("acc", ((logits > 0).float() == batch["attrs"]).float())
            return {"attrs": F.binary_cross_entropy_with_logits(logits.float(), batch["attrs"])}
        stats.report("acc", (logits.argmax(1) == batch["label"]).float())
        return {"cls": F.cross_entropy(logits, batch["label"])}

    @torch.no_grad()
    def evaluate(self, batch: dict, nets_: dict) -> dict[str, torch.Tensor]:
        """Sums over one eval batch; the loop adds them over the split and all ranks."""
        logits = nets_["net"](batch["image"])
        count = torch.tensor(float(len(logits)), device=logits.device)
        if self.model_cfg.target == "attrs":
            hits = ((logits > 0).float() == batch["attrs"]).float().sum(0)
            return {**{f"correct/{name}": h for name, h in zip(self.info.attr_names, hits)}, "count": count}
        return {"correct": (logits.argmax(1) == batch["label"]).sum().float(), "count": count}

    @staticmethod
    def finish_eval(sums: dict[str, float]) -> dict[str, float]:
        """class: acc. attrs: acc (mean over attributes) and acc_<name> per attribute."""
        count = max(sums["count"], 1.0)
        if "correct" in sums:
            return {"acc": sums["correct"] / count}
        per = {k.split("/", 1)[1]: v / count for k, v in sums.items() if k.startswith("correct/")}
        return {"acc": sum(per.values()) / max(len(per), 1), **{f"acc_{name}": a for name, a in per.items()}}
