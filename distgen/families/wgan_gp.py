"""`wgan_gp`: Wasserstein GAN with gradient penalty (Gulrajani et al. 2017) on the DCGAN nets.

    accelerate launch launch/train.py recipes/wgan_gp.yaml          # CelebA 64x64, the headline recipe
    accelerate launch launch/train.py recipes/wgan_gp_digits_smoke.yaml     # CPU smoke

The critic has no sigmoid and no BatchNorm (the penalty is per sample; `model.critic_norm`
chooses layer norm or none); n_critic is data: `train.phases: [{name: D, repeat: 5}, {name: G}]`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from distgen import stats
from distgen.families import nets
from distgen.families.base import GANFamily, GANModelConfig, loss_scale


@dataclass(frozen=True)
class ModelConfig(GANModelConfig):
    gp_weight: float = 10.0  # lambda of the gradient penalty
    critic_norm: Literal["layer", "none"] = "layer"


class WGANGP(GANFamily):
    ModelConfig = ModelConfig
    DEFAULT_PHASES = (("D", 5), ("G", 1))
    EAGER = ("D",)  # the gradient penalty differentiates D twice; torch.compile has no double backward

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        m = self.model_cfg
        self.nets = {"G": nets.generator(m.z_dim, info.channels, self.image_size, m.width, m.g_dropout),
                     "D": nets.Discriminator(info.channels, self.image_size, m.width, {"adv": 1}, m.critic_norm)}

    def gradient_penalty(self, D, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """(||grad_x D(x_hat)|| - 1)^2 on random interpolates x_hat of reals and fakes.

        Under fp16 loss scaling the score is scaled before autograd.grad and the gradient unscaled
        after (PyTorch AMP's recipe for gradient penalties), so small gradients do not underflow; the
        scale is the GradScaler's, which the stepper hands over as `loss_scale()` (a device tensor)."""
        eps = torch.rand(len(real), 1, 1, 1, device=real.device, dtype=real.dtype)
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        score = D(x_hat)["adv"].float().sum()
        scale = loss_scale()
        (grad,) = torch.autograd.grad(score * scale, x_hat, create_graph=True)
        return (grad.float().flatten(1).div(scale).norm(dim=1) - 1).square().mean()

    def loss(self, phase: str, nets_: dict, batch: dict | None) -> dict[str, torch.Tensor]:
        G, D = nets_["G"], nets_["D"]
        if phase == "D":  # critic: score reals above fakes, with 1-Lipschitz gradients in between
            with torch.no_grad():
                fake = self.augment(G(self.noise(len(batch["image"]))))
            real = self.augment(batch["image"])
            real_score, fake_score = D(real)["adv"].float().mean(), D(fake)["adv"].float().mean()
            stats.report("W", real_score - fake_score)
            return {"D/real": -real_score, "D/fake": fake_score,
                    "D/gp": self.model_cfg.gp_weight * self.gradient_penalty(D, real, fake)}
        # G: raise the critic's score of fakes
        return {"G/adv": -D(self.augment(G(self.noise(self.cfg.train.batch_size))))["adv"].float().mean()}
