"""`lsgan`: least-squares GAN (Mao et al. 2017) on the DCGAN nets: D regresses reals to 1, fakes to 0.

    accelerate launch launch/train.py recipes/lsgan_celeba.yaml
    accelerate launch launch/train.py recipes/lsgan_digits_smoke.yaml     # CPU smoke
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from distgen.families.dcgan import DCGAN


def _ls(out: torch.Tensor, target) -> torch.Tensor:
    out = out.float()
    target = target if isinstance(target, torch.Tensor) else torch.full_like(out, target)
    return 0.5 * F.mse_loss(out, target)


class LSGAN(DCGAN):
    def d_terms(self, real_out, fake_out) -> dict[str, torch.Tensor]:
        return {"D/real": _ls(real_out, self.targets(real_out, True)),
                "D/fake": _ls(fake_out, self.targets(fake_out, False))}

    def g_terms(self, fake_out) -> dict[str, torch.Tensor]:
        return {"G/adv": _ls(fake_out, self.model_cfg.real_label)}
