"""`dcgan`: the reports' DCGAN (BatchNorm conv nets, binary cross-entropy objective).

    accelerate launch launch/train.py recipes/dcgan_celeba.yaml
    accelerate launch launch/train.py recipes/dcgan_digits_smoke.yaml     # CPU smoke

`lsgan` reuses these nets with the least-squares objective (families/lsgan.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from distgen import stats
from distgen.families import nets
from distgen.families.base import GANFamily, GANModelConfig, bce


@dataclass(frozen=True)
class ModelConfig(GANModelConfig):
    pass


class DCGAN(GANFamily):
    ModelConfig = ModelConfig

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        m = self.model_cfg
        self.nets = {"G": nets.generator(m.z_dim, info.channels, self.image_size, m.width, m.g_dropout),
                     "D": nets.Discriminator(info.channels, self.image_size, m.width, {"adv": 1})}

    def d_terms(self, real_logit, fake_logit) -> dict[str, torch.Tensor]:
        return {"D/real": bce(real_logit, self.targets(real_logit, True)),
                "D/fake": bce(fake_logit, self.targets(fake_logit, False))}

    def g_terms(self, fake_logit) -> dict[str, torch.Tensor]:
        return {"G/adv": bce(fake_logit, self.model_cfg.real_label)}

    def loss(self, phase: str, nets_: dict, batch: dict | None) -> dict[str, torch.Tensor]:
        G, D = nets_["G"], nets_["D"]
        if phase == "D":  # D: push reals up, fakes down
            real = batch["image"]
            with torch.no_grad():
                fake = G(self.noise(len(real)))
            real_logit, fake_logit = D(self.augment(real))["adv"], D(self.augment(fake))["adv"]
            with torch.no_grad():  # statistics only: no autograd record (and no fp32 copy: the
                # accumulator is fp32)
                stats.report("D(x)", real_logit.sigmoid())
                stats.report("D(G(z))", fake_logit.sigmoid())
            return self.d_terms(real_logit, fake_logit)
        # G: make D call fakes real
        return self.g_terms(D(self.augment(G(self.noise(self.cfg.train.batch_size))))["adv"])
