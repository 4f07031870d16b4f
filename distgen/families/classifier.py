"""`classifier`: a small CNN for digit classes; the judge of generated images (the reports' metric).

    accelerate launch launch/train.py recipes/classifier_digits.yaml
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distgen import stats
from distgen.families.base import Family


@dataclass(frozen=True)
class ModelConfig:
    width: int = 32
    dropout: float = 0.3
    shift: int = 2  # random translation (pixels) of training images, so the judge is not brittle


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
        self.require_labels()
        m = self.model_cfg
        self.nets = {"net": cnn(info.channels, info.num_classes, m.width, m.dropout)}

    def _shift(self, x: torch.Tensor) -> torch.Tensor:
        s = self.model_cfg.shift
        if s <= 0:
            return x
        dx, dy = torch.randint(-s, s + 1, (2,)).tolist()
        return torch.roll(F.pad(x, (s, s, s, s), value=-1.0), (dy, dx), (2, 3))[..., s:-s, s:-s]

    def loss(self, batch: dict, nets_: dict) -> dict[str, torch.Tensor]:
        logits = nets_["net"](self._shift(batch["image"]))
        stats.report("acc", (logits.argmax(1) == batch["label"]).float())
        return {"cls": F.cross_entropy(logits, batch["label"])}

    @torch.no_grad()
    def evaluate(self, batch: dict, nets_: dict) -> dict[str, torch.Tensor]:
        """Sums over one eval batch; the loop adds them over the split and all ranks."""
        pred = nets_["net"](batch["image"]).argmax(1)
        return {"correct": (pred == batch["label"]).sum().float(),
                "count": torch.tensor(float(len(pred)), device=pred.device)}

    @staticmethod
    def finish_eval(sums: dict[str, float]) -> dict[str, float]:
        return {"acc": sums["correct"] / max(sums["count"], 1.0)}
