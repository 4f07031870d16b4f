"""`cgan`: a GAN conditioned on the (hair, eye) tag pair of the anime faces, or on a class label.

    accelerate launch launch/train.py recipes/cgan_anime.yaml
    accelerate launch launch/train.py recipes/cgan_digits_smoke.yaml       # CPU smoke, digit classes

The condition is the sample's class index; when index.json has a tag vocabulary with `hair` and
`eye`, the class is hair * n_eye + eye (the anime converter writes it so) and the condition is the
pair of one-hots. `model.cond: projection` (Miyato & Koyama 2018: D's score gains <embed(y), h>)
or `concat` (the condition as extra input channels of D, as in the reports' conditional DCGAN).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from distgen import stats
from distgen.families import nets
from distgen.errors import ConfigError
from distgen.families.base import Condition, GANFamily, GANModelConfig, bce


@dataclass(frozen=True)
class ModelConfig(GANModelConfig):
    cond: Literal["projection", "concat"] = "projection"
    grid_rows: int = 12  # conditions shown in the sample grid, one row each


class CondDiscriminator(nn.Module):
    """DCGAN trunk with a projection or concatenation conditioning of the score."""

    def __init__(self, channels, image_size, width, cond_dim: int, mode: str):
        super().__init__()
        self.mode = mode
        in_ch = channels + (cond_dim if mode == "concat" else 0)
        self.trunk, ch = nets.discriminator_trunk(in_ch, image_size, width)
        self.head = nets.head(ch, 1)
        if mode == "projection":
            self.embed = nn.Linear(cond_dim, ch * 16, bias=False)  # one vector per 4x4 feature position

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.mode == "concat":
            x = torch.cat([x, cond[:, :, None, None].expand(-1, -1, *x.shape[2:]).to(x.dtype)], dim=1)
        h = self.trunk(x)
        out = self.head(h)
        if self.mode == "projection":
            out = out + (self.embed(cond.to(h.dtype)) * h.flatten(1)).sum(1, keepdim=True)
        return {"adv": out}


class CGAN(GANFamily):
    ModelConfig = ModelConfig

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        self.require_labels()
        m = self.model_cfg
        tags = info.tags
        self.factors = ([len(tags["hair"]), len(tags["eye"])] if {"hair", "eye"} <= set(tags)
                        else [info.num_classes])
        self.num_classes = info.num_classes
        dim = sum(self.factors)
        self.nets = {"G": nets.generator(m.z_dim + dim, info.channels, self.image_size, m.width, m.g_dropout),
                     "D": CondDiscriminator(info.channels, self.image_size, m.width, dim, m.cond)}

    def condition(self, y: torch.Tensor) -> torch.Tensor:
        """Class index -> concatenated one-hots of its factors ((hair, eye) or the class itself)."""
        parts, rest = [], y
        for size in reversed(self.factors):
            parts.insert(0, F.one_hot(rest % size, size).float())
            rest = rest // size
        return torch.cat(parts, dim=1)

    def _g(self, G, z, y):
        return G(torch.cat([z, self.condition(y).to(z.dtype)[:, :, None, None]], dim=1))

    def loss(self, phase: str, nets_: dict, batch: dict | None) -> dict[str, torch.Tensor]:
        G, D = nets_["G"], nets_["D"]
        if phase == "D":  # D: real (image, its tags) up; fake (image, asked-for tags) down
            real, y = batch["image"], batch["label"]
            with torch.no_grad():
                y_fake = torch.randint(0, self.num_classes, (len(real),), device=self.device)
                fake = self._g(G, self.noise(len(real)), y_fake)
            real_logit = D(self.augment(real), self.condition(y))["adv"]
            fake_logit = D(self.augment(fake), self.condition(y_fake))["adv"]
            with torch.no_grad():  # statistics only: no autograd record (and no fp32 copy: the
                # accumulator is fp32)
                stats.report("D(x)", real_logit.sigmoid())
                stats.report("D(G(z))", fake_logit.sigmoid())
            return {"D/real": bce(real_logit, self.targets(real_logit, True)),
                    "D/fake": bce(fake_logit, self.targets(fake_logit, False))}
        n = self.cfg.train.batch_size
        y = torch.randint(0, self.num_classes, (n,), device=self.device)
        return {"G/adv": bce(D(self.augment(self._g(G, self.noise(n), y)), self.condition(y))["adv"],
                             self.model_cfg.real_label)}

    def grid_inputs(self, seed: int) -> tuple[dict, int]:
        """One row per condition (the first grid_rows classes), 8 fixed noise vectors per row."""
        rows = min(self.model_cfg.grid_rows, self.num_classes)
        z = self.noise(8, torch.Generator().manual_seed(seed)).repeat(rows, 1, 1, 1)
        y = torch.arange(rows, device=self.device).repeat_interleave(8)
        return {"z": z, "y": y}, 8

    def class_inputs(self, per_class: int, seed: int) -> dict:
        z = self.noise(per_class * self.num_classes, torch.Generator().manual_seed(seed))
        return {"z": z, "y": torch.arange(self.num_classes, device=self.device).repeat(per_class)}

    def sample_inputs(self, n: int, seed: int, condition: Condition) -> dict:
        """--class (index or name, e.g. "blonde hair blue eyes"), or with a tag vocabulary --attrs
        hair=COLOUR,eye=COLOUR (a tag left out is drawn at random from `seed`, per image)."""
        if not condition.attrs:
            return super().sample_inputs(n, seed, condition)
        tags = self.info.tags
        if len(self.factors) < 2:
            raise ConfigError("--attrs: this cgan run has no tags (its data has classes only); pick one with --class")
        if condition.cls is not None:
            raise ConfigError("--class and --attrs both name the condition; give one of them")
        inputs = self.eval_inputs(n, seed)
        rest = torch.randint(0, self.num_classes, (n,), generator=torch.Generator().manual_seed(seed + 1))
        parts = {"hair": rest // self.factors[1], "eye": rest % self.factors[1]}
        for key, value in condition.attrs:
            if key not in parts:
                raise ConfigError(f"--attrs: '{key}' is not a tag of this run; its tags: hair, eye")
            if value not in tags[key]:
                raise ConfigError(f"--attrs: {key}={value}; valid {key} tags: {', '.join(tags[key])}")
            parts[key] = torch.full((n,), list(tags[key]).index(value))
        inputs["y"] = (parts["hair"] * self.factors[1] + parts["eye"]).to(self.device)
        return inputs

    def generate(self, G, inputs: dict) -> torch.Tensor:
        return self._g(G, inputs["z"], inputs["y"])
