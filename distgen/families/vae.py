"""`vae`: the reports' convolutional variational autoencoder; loss = MSE + lambda * KLD.

    python launch/train.py recipes/vae_digits_smoke.yaml                 # CPU, seconds
    accelerate launch --num_processes 8 launch/train.py recipes/vae_celeba.yaml

At 64x64 RGB with the defaults these are the reports' nets: encoder Conv 3->32->32->64->128
(4x4, stride 2, BatchNorm, LeakyReLU) -> Linear 2048->512 twice (mean, log-variance); decoder
Linear 512->2048 -> ConvTranspose 128->64->32->32->3 -> tanh. `model.widths` and `model.latent`
scale them (the digits smoke recipe uses smaller ones).

The MSE term is per pixel on the 0..1 scale (as the reports quote it); KLD is summed over the
latent dimensions and averaged over the batch, so lambda = model.kl_weight has the reports' meaning
(1e-5..1e-4 was decisive there). `model.kl_warmup` raises lambda linearly from 0 over that fraction
of training.

Evaluation (eval/step_<N>.json): `mse` over the whole test split (reconstruction from the latent
mean), `kld` per test image, `num_test`. Figures (every log.sample_every steps): samples/step_<N>.png
(32 samples from the prior, fixed noise), eval/recon_step_<N>.png (10 test images over their
reconstructions), eval/tsne_step_<N>.png (t-SNE of test latents coloured by `model.tsne_attr`, or
by class when empty).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from distgen import figures, stats
from distgen.errors import ConfigError
from distgen.families.base import Family
from distgen.generation import save_grid


@dataclass(frozen=True)
class ModelConfig:
    latent: int = 512
    widths: tuple[int, ...] = (32, 32, 64, 128)  # encoder convs (4x4, stride 2); the decoder mirrors them
    slope: float = 0.01  # LeakyReLU slope (the reports: 0.005 in the encoder, 0.01 in the decoder)
    kl_weight: float = 1e-4  # lambda in loss = MSE + lambda * KLD
    kl_warmup: float = 0.0  # fraction of train.steps over which lambda rises linearly from 0 (0 = off)
    tsne_attr: str = ""  # colour the latent t-SNE by this attribute, e.g. Male ("" = by class)
    tsne_points: int = 1000  # first test images shown in the t-SNE (and the 10 reconstructions)


class Encoder(nn.Module):
    """Image in [-1, 1] -> (mean, log-variance) of q(z | x)."""

    def __init__(self, channels: int, size: int, widths: tuple[int, ...], latent: int, slope: float):
        super().__init__()
        layers, c = [], channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.LeakyReLU(slope, True)]
            c = w
        self.conv = nn.Sequential(*layers, nn.Flatten())
        flat = widths[-1] * (size >> len(widths)) ** 2
        self.mean, self.logvar = nn.Linear(flat, latent), nn.Linear(flat, latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x)
        return self.mean(h), self.logvar(h)


class Decoder(nn.Module):
    """z -> image in [-1, 1]: the encoder's mirror."""

    def __init__(self, channels: int, size: int, widths: tuple[int, ...], latent: int, slope: float):
        super().__init__()
        self.side, self.top = size >> len(widths), widths[-1]
        self.fc = nn.Linear(latent, self.top * self.side ** 2)
        layers, outs = [], [*reversed(widths[:-1]), channels]
        for i, (c_in, c_out) in enumerate(zip(reversed(widths), outs)):
            layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False))
            layers += [nn.BatchNorm2d(c_out), nn.LeakyReLU(slope, True)] if i < len(widths) - 1 else [nn.Tanh()]
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).view(len(z), self.top, self.side, self.side))


def kld(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per image, summed over the latent dimensions."""
    return -0.5 * (1 + logvar - mean.square() - logvar.exp()).sum(1)


def pixel_mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared error per pixel and channel on the 0..1 scale (images are in [-1, 1])."""
    return ((x.float() - y.float()) / 2).square()


class VAE(Family):
    ModelConfig = ModelConfig
    GENERATOR = "decoder"  # launch/evaluate.py scores samples from the prior like a GAN's

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        m, size = self.model_cfg, self.image_size
        if not m.widths or size % (1 << len(m.widths)):
            raise ConfigError(f"model.widths: {len(m.widths)} stride-2 convs need an image side divisible by "
                              f"{1 << len(m.widths)}; the image side is {size} (data.image_size)")
        if m.tsne_attr and m.tsne_attr not in info.attr_names:
            raise ConfigError(f"model.tsne_attr '{m.tsne_attr}' is not an attribute of data.root; it has: "
                              f"{', '.join(info.attr_names) or 'none (leave it empty to colour by class)'}")
        args = (info.channels, size, tuple(m.widths), m.latent, m.slope)
        self.nets = {"encoder": Encoder(*args), "decoder": Decoder(*args)}
        self.figure_samples = max(m.tsne_points, 10)

    def kl_weight(self) -> float:
        m = self.model_cfg
        return m.kl_weight * (min(1.0, self.progress / m.kl_warmup) if m.kl_warmup > 0 else 1.0)

    def loss(self, batch: dict, nets: dict) -> dict[str, torch.Tensor]:
        x = batch["image"]
        mean, logvar = nets["encoder"](x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()  # reparameterisation
        mse = pixel_mse(nets["decoder"](z), x).mean()
        kl = kld(mean.float(), logvar.float()).mean()
        stats.report("kld_raw", kl)
        return {"mse": mse, "kld": self.kl_weight() * kl}

    def evaluate(self, batch: dict, nets: dict) -> dict[str, torch.Tensor]:
        """Sums over one test batch, reconstructing from the latent mean (deterministic)."""
        x = batch["image"]
        mean, logvar = nets["encoder"](x)
        err = pixel_mse(nets["decoder"](mean), x)
        return {"sq_err": err.sum(), "pixels": torch.tensor(float(err.numel()), device=x.device),
                "kld": kld(mean.float(), logvar.float()).sum(), "count": torch.tensor(float(len(x)), device=x.device)}

    @staticmethod
    def finish_eval(sums: dict[str, float]) -> dict:
        return {"mse": sums["sq_err"] / max(sums["pixels"], 1.0), "kld": sums["kld"] / max(sums["count"], 1.0),
                "num_test": int(sums["count"])}

    def figures(self, nets: dict, batch: dict, run_dir: Path, step: int) -> None:
        """Prior samples, 10 reconstructions and the latent t-SNE of the first test images."""
        m, x = self.model_cfg, batch["image"]
        inputs, cols = self.grid_inputs(self.cfg.run.seed)
        save_grid(self.generate(nets["decoder"], inputs).clamp(-1, 1), run_dir / "samples" / f"step_{step}.png", cols)
        mean, _ = nets["encoder"](x)
        recon = nets["decoder"](mean[:10])
        save_grid(torch.cat([x[:10], recon.clamp(-1, 1)]), run_dir / "eval" / f"recon_step_{step}.png", len(recon))
        if m.tsne_attr:
            groups = (batch["attrs"][:, self.info.attr_names.index(m.tsne_attr)] > 0.5).long()
            names, title = [f"not {m.tsne_attr}", m.tsne_attr], f"test latents by {m.tsne_attr}"
        elif "label" in batch:
            groups, names, title = batch["label"], list(self.info.class_names), "test latents by class"
        else:
            groups, names, title = torch.zeros(len(x), dtype=torch.long), ["test"], "test latents"
        figures.scatter(figures.tsne(mean, self.cfg.run.seed), groups.cpu(), names,
                        run_dir / "eval" / f"tsne_step_{step}.png", f"{title} (step {step}, {len(x)} images)")

    # -- sampling from the prior (also what launch/evaluate.py's fid/isc/kid/prc use) -----------------

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.model_cfg.latent, generator=generator).to(self.device)

    def grid_inputs(self, seed: int) -> tuple[dict, int]:
        return {"z": self.noise(32, torch.Generator().manual_seed(seed))}, 8

    def generate(self, G: nn.Module, inputs: dict) -> torch.Tensor:
        return G(inputs["z"])
