"""`sagan`: Self-Attention GAN (Zhang et al. 2019): spectral norm on G and D, self-attention at the
middle resolution, hinge loss, two time-scale learning rates (lr_d > lr_g in the recipe).

    accelerate launch launch/train.py recipes/sagan_celeba.yaml
    accelerate launch launch/train.py recipes/sagan_digits_smoke.yaml     # CPU smoke
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distgen import stats
from distgen.families import nets
from distgen.families.base import GANFamily, GANModelConfig


@dataclass(frozen=True)
class ModelConfig(GANModelConfig):
    attention_res: int = 0  # side of the feature maps that get self-attention (0 = image side / 2)


class SAGAN(GANFamily):
    ModelConfig = ModelConfig

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        m = self.model_cfg
        res = m.attention_res or self.image_size // 2
        self.nets = {"G": nets.generator(m.z_dim, info.channels, self.image_size, m.width, m.g_dropout,
                                         spectral=True, attention_res=res),
                     "D": nets.Discriminator(info.channels, self.image_size, m.width, {"adv": 1}, norm="none",
                                             spectral=True, attention_res=res)}

    def loss(self, phase: str, nets_: dict, batch: dict | None) -> dict[str, torch.Tensor]:
        G, D = nets_["G"], nets_["D"]
        if phase == "D":  # hinge: reals above +1, fakes below -1
            real = batch["image"]
            with torch.no_grad():
                fake = G(self.noise(len(real)))
            real_out = D(self.augment(real))["adv"].float()
            fake_out = D(self.augment(fake))["adv"].float()
            stats.report("D(x)", real_out)
            stats.report("D(G(z))", fake_out)
            return {"D/real": F.relu(1.0 - real_out).mean(), "D/fake": F.relu(1.0 + fake_out).mean()}
        return {"G/adv": -D(self.augment(G(self.noise(self.cfg.train.batch_size))))["adv"].float().mean()}
