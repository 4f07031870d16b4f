"""`stargan`: multi-domain image-to-image translation with one generator (Choi et al. 2018).

    python -m shards celeba --src RAW --out data/celeba64
    accelerate launch launch/train.py recipes/stargan_celeba.yaml            # 5 CelebA attributes
    python launch/train.py recipes/stargan_digits_smoke.yaml                 # CPU smoke: digit classes
    python launch/translate_acc.py RUN_DIR --judge JUDGE_RUN                 # attribute accuracy

G takes an image and a target label vector (tiled over the image as extra channels); D (no
normalisation, LeakyReLU 0.01) has a PatchGAN adversarial head and an attribute-classification head.
As the reference implementation (yunjey/stargan):
  D/real, D/fake, D/gp   WGAN-GP critic on reals and on G(x, c_trg) (gp_weight 10)
  D/cls                  lambda_cls * classification loss of D on real images against their labels
  G/adv                  -D(G(x, c_trg))
  G/cls                  lambda_cls * classification loss of D on G(x, c_trg) against c_trg
  G/rec                  lambda_rec * |G(G(x, c_trg), c_org) - x|_1 (back to the original labels)
Target labels are the batch's own labels in a random order (the reference's choice: every target is
a label combination that occurs in the data). Default phases: 5 critic steps per G step.

Labels (`model.condition`):
  attrs  the attributes `data.attrs` (default Black_Hair, Blond_Hair, Brown_Hair, Male, Young), as
         0/1; classification loss = binary cross-entropy summed over attributes. The attributes named
         in `model.exclusive` (the hair colours) form one group: translating to one of them switches
         it on and the others off; every other attribute is translated by flipping it.
  class  the class label as a one-hot vector (digits have no attributes: the smoke recipe translates
         a digit into each digit class); classification loss = cross-entropy; all classes one group.

Sample grid, one row per test image: the input, then the input translated to each selected attribute
(flipped, or switched on within its exclusive group). `attribute_accuracy` below measures how often
a `classifier` judge (recipes/classifier_celeba_attrs.yaml, `model.target: attrs`) finds the asked-for
attribute in translated test images.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from distgen import stats
from distgen.data import eval_batches, load_info
from distgen.errors import ConfigError
from distgen.families.base import Condition, Family, GANFamily, PhaseSpec, attr_settings
from distgen.families.cyclegan import ResidualBlock, first_images
from distgen.families.wgan_gp import WGANGP

DEFAULT_ATTRS = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
HAIR = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")


@dataclass(frozen=True)
class ModelConfig:
    condition: Literal["attrs", "class"] = "attrs"
    width: int = 64  # G's first layer and D's first layer (the reference's g_conv_dim, d_conv_dim)
    n_blocks: int = 6  # residual blocks of G
    d_layers: int = 0  # stride-2 convs of D; 0 = down to a 2x2 map (6 at 128 px, the reference)
    lambda_cls: float = 1.0
    lambda_rec: float = 10.0
    gp_weight: float = 10.0
    exclusive: tuple[str, ...] = HAIR  # attributes of which at most one is on (those selected)
    grid_rows: int = 8  # test images in the sample grid


# ----------------------------------------------------------------------------- nets


class Generator(nn.Module):
    """The reference G: 7x7 conv, two 4x4 stride-2 convs down, residual blocks, two 4x4 transposed convs
    up, 7x7 conv, tanh; instance norm with affine parameters (no running statistics)."""

    def __init__(self, channels: int, c_dim: int, width: int = 64, n_blocks: int = 6):
        super().__init__()

        def norm(ch):
            return nn.InstanceNorm2d(ch, affine=True)

        layers = [nn.Conv2d(channels + c_dim, width, 7, 1, 3, bias=False), norm(width), nn.ReLU(True)]
        ch = width
        for _ in range(2):
            layers += [nn.Conv2d(ch, 2 * ch, 4, 2, 1, bias=False), norm(2 * ch), nn.ReLU(True)]
            ch *= 2
        layers += [ResidualBlock(ch, "instance", reflect=False, affine=True, bias=False) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), norm(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.Conv2d(ch, channels, 7, 1, 3, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.main(torch.cat([x, c], dim=1))


class Discriminator(nn.Module):
    """The reference D: 4x4 stride-2 convs with LeakyReLU(0.01), no normalisation; "adv" = a 3x3 conv
    to one score per patch, "cls" = a conv over the whole last map to one logit per label."""

    def __init__(self, channels: int, image_size: int, c_dim: int, width: int = 64, layers: int = 0):
        super().__init__()
        layers = layers or int(math.log2(image_size)) - 1
        body, ch = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.01)], width
        for _ in range(layers - 1):
            body += [nn.Conv2d(ch, 2 * ch, 4, 2, 1), nn.LeakyReLU(0.01)]
            ch *= 2
        self.main = nn.Sequential(*body)
        self.adv = nn.Conv2d(ch, 1, 3, 1, 1, bias=False)
        self.cls = nn.Conv2d(ch, c_dim, image_size // 2 ** layers, bias=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.main(x)
        return {"adv": self.adv(h), "cls": self.cls(h).flatten(1)}


# ----------------------------------------------------------------------------- family


class StarGAN(Family):
    STYLE = "adversarial"
    ModelConfig = ModelConfig
    PHASES = {"D": PhaseSpec(("D",), uses_data=True), "G": PhaseSpec(("G",), uses_data=True)}
    DEFAULT_PHASES = (("D", 5), ("G", 1))  # n_critic = 5
    GENERATOR = "G"
    lr = GANFamily.lr
    optimizer = GANFamily.optimizer
    gradient_penalty = WGANGP.gradient_penalty  # (||grad D(x_hat)|| - 1)^2, fp16-safe via loss_scale()
    EAGER = WGANGP.EAGER  # the penalty differentiates D twice: never torch.compile D

    def __init__(self, cfg, info, device="cpu"):
        super().__init__(cfg, info, device)
        m = self.model_cfg
        if m.condition == "class":
            self.require_labels()
            self.label_names = tuple(info.class_names)
            self.columns = None
            self.group = list(range(len(self.label_names)))
        else:
            chosen = cfg.data.attrs or (DEFAULT_ATTRS if set(DEFAULT_ATTRS) <= set(info.attr_names)
                                        else info.attr_names)
            if not chosen:
                raise ConfigError(f"model.condition=attrs needs attributes, but data.root '{cfg.data.root}' has "
                                  f"none; use model.condition=class or data with attributes (celeba)")
            missing = [a for a in chosen if a not in info.attr_names]
            if missing:
                raise ConfigError(f"attribute '{missing[0]}' is not in data.root '{cfg.data.root}'; it has: "
                                  f"{', '.join(info.attr_names)}")
            self.label_names = tuple(chosen)
            self.columns = [info.attr_names.index(a) for a in chosen]  # batch["attrs"] -> our labels
            self.group = [i for i, a in enumerate(chosen) if a in m.exclusive]
        if self.image_size % 4:
            raise ConfigError(f"the StarGAN generator needs an image side divisible by 4; got {self.image_size}")
        layers = m.d_layers or int(math.log2(self.image_size)) - 1
        if 2 ** layers > self.image_size:
            raise ConfigError(f"'model.d_layers' = {m.d_layers} is too deep for {self.image_size} px images")
        k = self.c_dim = len(self.label_names)
        self.nets = {"G": Generator(info.channels, k, m.width, m.n_blocks),
                     "D": Discriminator(info.channels, self.image_size, k, m.width, layers)}

    # -- labels --------------------------------------------------------------------------------

    def labels(self, batch: dict) -> torch.Tensor:
        """(N, c_dim) float 0/1: one-hot classes, or the selected attributes in data.attrs order."""
        if self.model_cfg.condition == "class":
            return F.one_hot(batch["label"], self.c_dim).float()
        return batch["attrs"][:, self.columns].float()

    def translations(self, c: torch.Tensor) -> list[torch.Tensor]:
        """For each label j, the target labels of "translate to j": within the exclusive group switch j
        on and the rest of the group off; outside it flip j (the reference's create_labels)."""
        out = []
        for j in range(self.c_dim):
            t = c.clone()
            if j in self.group:
                t[:, self.group] = 0.0
                t[:, j] = 1.0
            else:
                t[:, j] = 1.0 - t[:, j]
            out.append(t)
        return out

    def cls_loss(self, logits: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.model_cfg.condition == "class":
            return F.cross_entropy(logits.float(), c.argmax(1))
        return F.binary_cross_entropy_with_logits(logits.float(), c, reduction="sum") / len(c)

    def cls_acc(self, logits: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.model_cfg.condition == "class":
            return (logits.argmax(1) == c.argmax(1)).float()
        return ((logits > 0).float() == c).float()

    # -- losses --------------------------------------------------------------------------------

    def loss(self, phase: str, nets_: dict, batch: dict) -> dict[str, torch.Tensor]:
        G, D = nets_["G"], nets_["D"]
        m = self.model_cfg
        real = batch["image"]
        c_org = self.labels(batch)
        c_trg = c_org[torch.randperm(len(c_org)).to(c_org.device)]
        if phase == "D":  # critic: reals above translations, 1-Lipschitz between; name the reals' labels
            with torch.no_grad():
                fake = G(real, c_trg)
            real_out, fake_out = D(real), D(fake)
            real_score, fake_score = real_out["adv"].float().mean(), fake_out["adv"].float().mean()
            stats.report("W", real_score - fake_score)
            stats.report("D/acc_real", self.cls_acc(real_out["cls"], c_org))
            return {"D/real": -real_score, "D/fake": fake_score,
                    "D/cls": m.lambda_cls * self.cls_loss(real_out["cls"], c_org),
                    "D/gp": m.gp_weight * self.gradient_penalty(D, real, fake)}
        # G: translations the critic scores high, that carry the target labels, and that come back
        fake = G(real, c_trg)
        out = D(fake)
        stats.report("G/acc_fake", self.cls_acc(out["cls"], c_trg))
        rec = G(fake, c_org)
        return {"G/adv": -out["adv"].float().mean(),
                "G/cls": m.lambda_cls * self.cls_loss(out["cls"], c_trg),
                "G/rec": m.lambda_rec * F.l1_loss(rec.float(), real.float())}

    # -- sampling ------------------------------------------------------------------------------

    def grid_inputs(self, seed: int) -> tuple[dict, int]:
        """The first model.grid_rows test images with their labels (fixed; `seed` is not needed)."""
        batch = first_images(self.cfg, self.cfg.data.root, self.model_cfg.grid_rows, self.device)
        return {"image": batch["image"], "c": self.labels(batch)}, 1 + self.c_dim

    def generate(self, G, inputs: dict) -> torch.Tensor:
        """Per input: the input, then its translation to each label (rows of 1 + c_dim)."""
        x = inputs["image"]
        outs = [x] + [G(x, t) for t in self.translations(inputs["c"])]
        return torch.stack([o.float() for o in outs], dim=1).flatten(0, 1)

    # -- the user's own images (launch/sample.py --input) --------------------------------------

    def targets(self, c: torch.Tensor, condition: Condition) -> torch.Tensor:
        """The target labels of images whose own labels are `c`: condition: class, --class K (one-hot);
        condition: attrs, --attrs Name=0|1,... set, an exclusive attribute switched on switching the
        rest of its group off unless also given, every other attribute kept."""
        if condition.direction:
            raise ConfigError("--direction: a stargan run translates to labels; give them with "
                              + ("--class" if self.model_cfg.condition == "class" else "--attrs Name=0|1"))
        if self.model_cfg.condition == "class":
            if condition.attrs:
                raise ConfigError("--attrs: this stargan run is conditioned on classes; pick the target with --class")
            if condition.cls is None:
                raise ConfigError(f"a stargan run needs a target: --class, one of {', '.join(self.label_names)}")
            t = torch.zeros_like(c)
            t[:, self.class_index(condition.cls, self.label_names)] = 1.0
            return t
        if condition.cls is not None:
            raise ConfigError(f"--class: this stargan run is conditioned on attributes; set them with --attrs "
                              f"Name=0|1 ({', '.join(self.label_names)})")
        settings = attr_settings(condition, self.label_names)
        if not settings:
            raise ConfigError(f"a stargan run needs a target: --attrs Name=0|1,... of {', '.join(self.label_names)}")
        t = c.clone()
        for j, value in settings.items():
            if value == 1.0 and j in self.group:
                t[:, [g for g in self.group if g not in settings]] = 0.0
            t[:, j] = value
        return t

    def translate(self, G, images: torch.Tensor, condition: Condition) -> torch.Tensor:
        """Each image to the target labels (`targets`). The user's images carry no labels: their own are
        what D's classification head reads in them, so attributes not asked for stay as they are."""
        D = self.nets["D"]
        logits = D(images)["cls"].float()
        c = (F.one_hot(logits.argmax(1), self.c_dim).float() if self.model_cfg.condition == "class"
             else (logits > 0).float())
        return G(images, self.targets(c, condition))


# ----------------------------------------------------------------------------- measurement


@torch.no_grad()
def attribute_accuracy(family: StarGAN, judge, num_samples: int = 1000, batch_size: int = 64) -> dict:
    """Attribute accuracy of translated test images as judged by a `classifier` family.

    The first num_samples images of the family's eval split (0 = all) are translated to each label j
    (`translations`); the judge's prediction of label j on the result is compared with the target.
    `judge`: a loaded classifier (distgen.checkpoint.load_run) with `model.target: attrs` knowing every
    selected attribute by name, or, for `model.condition: class`, a class judge of the same classes.
    Returns attr_acc (mean over labels), attr_acc_<name> per label, attr_acc_real (the judge on the
    untranslated images against their own labels, the ceiling: mean per-attribute accuracy, or class
    accuracy for `condition: class`) and num_samples."""
    G, net = family.nets["G"].eval(), judge.nets["net"].eval()
    target = getattr(judge.model_cfg, "target", "class")
    if judge.info.channels != family.info.channels:
        raise ConfigError(f"the judge takes {judge.info.channels}-channel images; the run has {family.info.channels}")
    if family.model_cfg.condition == "class":
        if target != "class" or tuple(judge.info.class_names) != family.label_names:
            raise ConfigError(f"a class-conditioned StarGAN needs a class judge of classes {list(family.label_names)}")

        def predict(x):
            return F.one_hot(net(x).argmax(1), family.c_dim).float()
    else:
        missing = [a for a in family.label_names if a not in judge.info.attr_names] if target == "attrs" else ["all"]
        if missing:
            raise ConfigError(f"the judge must be an attrs classifier (model.target: attrs) that knows "
                              f"{', '.join(family.label_names)}; it lacks {missing[0]}")
        cols = [judge.info.attr_names.index(a) for a in family.label_names]

        def predict(x):
            return (net(x)[:, cols] > 0).float()

    exact = family.model_cfg.condition == "class"  # real images: class accuracy, not per-column agreement
    cfg = family.cfg
    info = load_info(dataclasses.replace(cfg.data, root=cfg.data.root))
    split = cfg.data.eval_split if info.splits.get(cfg.data.eval_split) else cfg.data.train_split
    hits, real_hits, n = torch.zeros(family.c_dim), torch.zeros(family.c_dim), 0
    for batch in eval_batches(info.splits[split], batch_size, info, family.image_size, attrs=cfg.data.attrs,
                              crop=cfg.data.crop):
        if num_samples and n >= num_samples:
            break
        batch = {k: v[:num_samples - n] if num_samples else v for k, v in batch.items()}
        x, c = batch["image"].to(family.device), family.labels(batch).to(family.device)
        agree = predict(x) == c
        if exact:
            agree = agree.all(1, keepdim=True).expand_as(agree)
        real_hits += agree.float().sum(0).cpu()
        for j, t in enumerate(family.translations(c)):
            hits[j] += (predict(G(x, t))[:, j] == t[:, j]).float().sum().cpu()
        n += len(x)
    acc = hits / max(n, 1)
    return {"attr_acc": round(acc.mean().item(), 6),
            **{f"attr_acc_{name}": round(a, 6) for name, a in zip(family.label_names, acc.tolist())},
            "attr_acc_real": round((real_hits / max(n, 1)).mean().item(), 6), "num_samples": n}
