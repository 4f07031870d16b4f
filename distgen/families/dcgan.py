"""`dcgan`: the reports' DCGAN (BatchNorm conv nets, binary cross-entropy objective).

    accelerate launch launch/train.py recipes/dcgan_digits_smoke.yaml
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from distgen import stats
from distgen.families import nets
from distgen.families.base import GANFamily, bce


@dataclass(frozen=True)
class ModelConfig:
    z_dim: int = 100
    width: int = 64  # channels of D's first layer and G's last hidden layer


class DCGAN(GANFamily):
    ModelConfig = ModelConfig

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        m = self.model_cfg
        self.nets = {"G": nets.generator(m.z_dim, info.channels, self.image_size, m.width),
                     "D": nets.Discriminator(info.channels, self.image_size, m.width, {"adv": 1})}

    def loss(self, phase: str, nets_: dict, batch: dict | None) -> dict[str, torch.Tensor]:
        G, D = nets_["G"], nets_["D"]
        n = self.cfg.train.batch_size
        if phase == "D":  # D: push reals up, fakes down
            with torch.no_grad():
                fake = G(self.noise(n))
            real_logit, fake_logit = D(batch["image"])["adv"], D(fake)["adv"]
            stats.report("D(x)", real_logit.sigmoid())
            stats.report("D(G(z))", fake_logit.sigmoid())
            return {"D/real": bce(real_logit, 1.0), "D/fake": bce(fake_logit, 0.0)}
        # G: make D call fakes real
        return {"G/adv": bce(D(G(self.noise(n)))["adv"], 1.0)}

    def grid_inputs(self, seed: int) -> tuple[dict, int]:
        return {"z": self.noise(64, torch.Generator().manual_seed(seed))}, 8

    def generate(self, G, inputs: dict) -> torch.Tensor:
        return G(inputs["z"])
