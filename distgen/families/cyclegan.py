"""`cyclegan`: unpaired image-to-image translation (Zhu et al. 2017) between two shard sets.

    python -m shards maps --src RAW --out data/maps            # writes data/maps/A and data/maps/B
    accelerate launch launch/train.py recipes/cyclegan_maps.yaml          # least-squares objective
    accelerate launch launch/train.py recipes/cyclegan_maps_bce.yaml      # the same with BCE
    python launch/train.py recipes/cyclegan_digits_smoke.yaml             # digits <-> digits-m, CPU
    python launch/translate_acc.py RUN_DIR --judge-a JUDGE_RUN --judge-b JUDGE_RUN   # digit accuracy
    python launch/evaluate.py RUN_DIR --metrics pixel     # maps: photo->map RMSE, pixel accuracy (paired test split)

Nets (as the reference implementation, pytorch-CycleGAN-and-pix2pix): ResNet generators (reflection
padding, instance norm, `model.n_blocks` residual blocks: 9 at 256 px, 6 at 128 px) and 70x70 PatchGAN
discriminators (`model.d_layers: 3`). Net "G" holds both generators, G.nets.AB (A -> B) and G.nets.BA
(B -> A), and net "D" both discriminators, D.nets.A (judges domain-A images) and D.nets.B: as in the
reference, one optimizer steps both generators and one both discriminators, and the generator EMA,
the sample grid and evaluate.py see both directions through the one "G".

Losses (`model.gan_mode`: lsgan = mean squared error on raw outputs, bce = cross-entropy on logits),
term suffixes name the domain of the images involved:
  D/A_real, D/A_fake, D/B_real, D/B_fake   0.5 * gan loss of each D on reals and on pooled fakes
  G/adv_A, G/adv_B                          fakes of each domain judged real by that domain's D
  G/cycle_A, G/cycle_B                      lambda_cycle * |G_BA(G_AB(a)) - a|_1, and B -> A -> B
  G/idt_A, G/idt_B                          lambda_identity * lambda_cycle * |G_BA(a) - a|_1, |G_AB(b) - b|_1
Each D sees its fakes through an image history pool of `model.pool_size` (50) earlier fakes; the
pools hold uint8 images (the stored fakes rounded to 8 bits: 4x smaller, see ImagePool), are
checkpointed per rank (family_rank<R>.pt: each rank pools its own fakes) and drawn with
the global torch RNG, so resume is exact on any number of processes.
The lr decays linearly to 0 over the second half with `optim.decay_start: 0.5` (the loop's schedule);
random left-right flips of training images come from the data stream (`data.hflip: true`).

Domains with different channel counts (digits: grey, digits-m: RGB): each generator maps its own
input channels to the other domain's; where an image must enter the other domain's generator
(identity terms) grey is repeated to RGB and RGB averaged to grey.

Sample grid, per test image pair: real_A, fake_B, rec_A, idt_A over real_B, fake_A, rec_B, idt_B
(idt_A = G_BA(real_A), the A image kept by the B -> A generator; grey shown as RGB).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from distgen import stats
from distgen.data import eval_batches, load_info
from distgen.errors import ConfigError
from distgen.families import nets as dcgan_nets
from distgen.families.base import Condition, Family, GANFamily, PhaseSpec, bce


@dataclass(frozen=True)
class ModelConfig:
    width: int = 64  # channels of G's first layer and D's first layer (ngf = ndf)
    n_blocks: int = 9  # residual blocks of G (the reference: 9 at 256 px, 6 at 128 px)
    d_layers: int = 3  # stride-2 layers of the PatchGAN; 3 = the 70x70 PatchGAN
    norm: Literal["instance", "batch"] = "instance"
    dropout: float = 0.0  # dropout inside G's residual blocks (the reference's --no_dropout off: 0.5)
    gan_mode: Literal["lsgan", "bce"] = "lsgan"
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5  # times lambda_cycle; 0 = no identity terms
    pool_size: int = 50  # image history pool of each D; 0 = D sees only the newest fakes
    grid_rows: int = 4  # test image pairs in the sample grid


# ----------------------------------------------------------------------------- nets


def norm_layer(kind: str, ch: int, affine: bool = False) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=affine) if kind == "instance" else nn.BatchNorm2d(ch)


class ResidualBlock(nn.Module):
    """x + (pad, conv3x3, norm, ReLU, [dropout], pad, conv3x3, norm)(x)."""

    def __init__(self, ch: int, norm: str = "instance", reflect: bool = True, dropout: float = 0.0,
                 affine: bool = False, bias: bool = True):
        super().__init__()

        def conv():
            if reflect:
                return [nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=bias)]
            return [nn.Conv2d(ch, ch, 3, padding=1, bias=bias)]

        self.block = nn.Sequential(*conv(), norm_layer(norm, ch, affine), nn.ReLU(True),
                                   *([nn.Dropout(dropout)] if dropout > 0 else []),
                                   *conv(), norm_layer(norm, ch, affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def resnet_generator(in_ch: int, out_ch: int, width: int = 64, n_blocks: int = 9, norm: str = "instance",
                     dropout: float = 0.0) -> nn.Sequential:
    """The reference ResnetGenerator: 7x7 conv, two stride-2 convs down, residual blocks, two
    transposed convs up, 7x7 conv, tanh. (N, in_ch, H, W) -> (N, out_ch, H, W) for H, W divisible by 4."""
    bias = norm == "instance"  # the reference: convs before BatchNorm have no bias
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_ch, width, 7, bias=bias), norm_layer(norm, width), nn.ReLU(True)]
    ch = width
    for _ in range(2):
        layers += [nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1, bias=bias), norm_layer(norm, 2 * ch), nn.ReLU(True)]
        ch *= 2
    layers += [ResidualBlock(ch, norm, True, dropout, bias=bias) for _ in range(n_blocks)]
    for _ in range(2):
        layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                   norm_layer(norm, ch // 2), nn.ReLU(True)]
        ch //= 2
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch, 7), nn.Tanh()]
    return dcgan_nets.init_weights(nn.Sequential(*layers))


def patch_discriminator(in_ch: int, width: int = 64, n_layers: int = 3, norm: str = "instance") -> nn.Sequential:
    """The reference NLayerDiscriminator: one real/fake score per overlapping patch (70x70 at n_layers=3;
    a 30x30 map for a 256 px image). Outputs raw scores (logits for bce)."""
    bias = norm == "instance"
    layers = [nn.Conv2d(in_ch, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for i in range(1, n_layers + 1):
        prev, mult = mult, min(2 ** i, 8)
        stride = 2 if i < n_layers else 1  # the last hidden layer keeps the resolution
        layers += [nn.Conv2d(width * prev, width * mult, 4, stride, 1, bias=bias), norm_layer(norm, width * mult),
                   nn.LeakyReLU(0.2, True)]
    layers.append(nn.Conv2d(width * mult, 1, 4, 1, 1))
    return dcgan_nets.init_weights(nn.Sequential(*layers))


def receptive_field(net: nn.Sequential) -> int:
    """Side of the input patch one output of a stack of convolutions sees."""
    field, jump = 1, 1
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            field += (m.kernel_size[0] - 1) * jump
            jump *= m.stride[0]
    return field


class Pair(nn.Module):
    """Two nets under one name, called as pair(x, key): one optimizer and one DDP wrapper for both."""

    def __init__(self, **nets: nn.Module):
        super().__init__()
        self.nets = nn.ModuleDict(nets)

    def forward(self, x: torch.Tensor, key: str) -> torch.Tensor:
        return self.nets[key](x)


# ----------------------------------------------------------------------------- pool


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as 0..255 (what an 8-bit image file would hold)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1


class ImagePool:
    """The reference's history of generated images: until `size` images are stored every new image is
    stored and returned; then each new image is, with probability 1/2, swapped for a random stored one
    (which is returned in its place). Random draws come from the global torch RNG (seeded and
    checkpointed by the loop), so a resumed run draws the same as an uninterrupted one.

    Stored images are uint8 (to_uint8), in memory and in checkpoints: a 50-image pool of 256 px RGB is
    9.8 MB per pool instead of 39 MB, per rank. The price is rounding: a fake returned from the history
    differs from the one G made by up to 1/255 (the step of an 8-bit image), the precision of the real
    images D sees. Rounding as it is stored, not as it is saved, keeps resume exact: an interrupted
    run's pool returns exactly what the uninterrupted one's does."""

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []  # uint8, each [C, H, W]

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size <= 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(to_uint8(image))
                out.append(image)
            elif torch.rand(()) < 0.5:
                j = int(torch.randint(self.size, ()))
                out.append(from_uint8(self.images[j]).to(image.device, image.dtype))
                self.images[j] = to_uint8(image)
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"size": self.size,
                "images": torch.stack(self.images).cpu() if self.images else torch.zeros(0, dtype=torch.uint8)}

    def load_state_dict(self, state: dict) -> None:
        images = state["images"]
        if images.dtype != torch.uint8:  # a checkpoint from before pools were uint8 (float in [-1, 1])
            images = to_uint8(images)
        self.images = list(images.unbind(0)) if len(images) else []


# ----------------------------------------------------------------------------- helpers


def to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repeating, RGB -> grey by averaging; unchanged when the counts agree."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    return x.mean(dim=1, keepdim=True)


def first_images(cfg, root: str, n: int, device) -> dict:
    """The first n images (and whatever else the batch holds) of a shard folder's eval split
    (its train split if it has none): fixed inputs for sample grids and measurements."""
    info = load_info(dataclasses.replace(cfg.data, root=root))
    split = cfg.data.eval_split if info.splits.get(cfg.data.eval_split) else cfg.data.train_split
    batch = next(eval_batches(info.splits[split], n, info, cfg.data.image_size, attrs=cfg.data.attrs,
                              crop=cfg.data.crop))
    return {k: v.to(device) for k, v in batch.items()}


# ----------------------------------------------------------------------------- family


class CycleGAN(Family):
    STYLE = "adversarial"
    ModelConfig = ModelConfig
    STREAMS = {"A": "domain_a", "B": "domain_b"}
    PER_RANK_STATE = True  # the image pools: each rank pools its own fakes (state_dict below)
    # As the reference: generators first, then the discriminators on the pooled fakes.
    PHASES = {"G": PhaseSpec(("G",), uses_data=True), "D": PhaseSpec(("D",), uses_data=True)}
    DEFAULT_PHASES = (("G", 1), ("D", 1))
    GENERATOR = "G"
    lr = GANFamily.lr  # optim.lr_g for "G" (both generators), optim.lr_d for "D"
    optimizer = GANFamily.optimizer

    def __init__(self, cfg, info: dict, device="cpu"):
        m = cfg.model
        self.cfg, self.model_cfg, self.info, self.device = cfg, m, info, torch.device(device)
        sizes = {k: cfg.data.image_size or i.image_size for k, i in info.items()}
        if sizes["A"] != sizes["B"]:
            raise ConfigError(f"data.domain_a has {sizes['A']} px images and data.domain_b {sizes['B']} px; "
                              f"set data.image_size to resize both")
        self.image_size = sizes["A"]
        if self.image_size % 4:
            raise ConfigError(f"the ResNet generator needs an image side divisible by 4; got {self.image_size} "
                              f"(set data.image_size)")
        for key, value in (("n_blocks", m.n_blocks), ("pool_size", m.pool_size)):
            if value < 0:
                raise ConfigError(f"'model.{key}' must be >= 0, got {value}")
        if m.d_layers < 1 or self.image_size // 2 ** m.d_layers < 2:
            raise ConfigError(f"'model.d_layers' = {m.d_layers} does not fit {self.image_size} px images "
                              f"(need 1 <= d_layers and image_side / 2^d_layers >= 2)")
        self.channels = {k: i.channels for k, i in info.items()}
        ca, cb = self.channels["A"], self.channels["B"]
        self.nets = {
            "G": Pair(AB=resnet_generator(ca, cb, m.width, m.n_blocks, m.norm, m.dropout),
                      BA=resnet_generator(cb, ca, m.width, m.n_blocks, m.norm, m.dropout)),
            "D": Pair(A=patch_discriminator(ca, m.width, m.d_layers, m.norm),
                      B=patch_discriminator(cb, m.width, m.d_layers, m.norm)),
        }
        self.pools = {"A": ImagePool(m.pool_size), "B": ImagePool(m.pool_size)}

    # -- checkpointed state: the two image pools -----------------------------------------------

    def state_dict(self) -> dict:
        return {f"pool_{k}": pool.state_dict() for k, pool in self.pools.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, pool in self.pools.items():
            pool.load_state_dict(state[f"pool_{k}"])

    # -- losses --------------------------------------------------------------------------------

    def gan_loss(self, out: torch.Tensor, real: bool) -> torch.Tensor:
        target = 1.0 if real else 0.0
        if self.model_cfg.gan_mode == "bce":
            return bce(out, target)
        return F.mse_loss(out.float(), torch.full_like(out, target, dtype=torch.float32))

    def loss(self, phase: str, nets_: dict, batch: dict) -> dict[str, torch.Tensor]:
        G, D = nets_["G"], nets_["D"]
        m = self.model_cfg
        real_a, real_b = batch["A"]["image"], batch["B"]["image"]
        if phase == "D":  # each D: its domain's reals up, pooled fakes of its domain down
            with torch.no_grad():
                fake_a, fake_b = G(real_b, "BA"), G(real_a, "AB")
            terms, seen = {}, {}
            for key, real, fake in (("A", real_a, fake_a), ("B", real_b, fake_b)):
                real_out, fake_out = D(real, key), D(self.pools[key].query(fake), key)
                seen[key] = (real_out, fake_out)
                terms[f"D/{key}_real"] = 0.5 * self.gan_loss(real_out, True)
                terms[f"D/{key}_fake"] = 0.5 * self.gan_loss(fake_out, False)
            score = torch.sigmoid if m.gan_mode == "bce" else (lambda t: t)
            stats.report("D(x)", torch.stack([score(r.float()).mean() for r, _ in seen.values()]).mean())
            stats.report("D(G(z))", torch.stack([score(f.float()).mean() for _, f in seen.values()]).mean())
            return terms
        # G: fool both Ds, come back unchanged around the cycle, leave own-domain images alone
        fake_b, fake_a = G(real_a, "AB"), G(real_b, "BA")
        rec_a, rec_b = G(fake_b, "BA"), G(fake_a, "AB")
        terms = {"G/adv_A": self.gan_loss(D(fake_a, "A"), True), "G/adv_B": self.gan_loss(D(fake_b, "B"), True),
                 "G/cycle_A": m.lambda_cycle * F.l1_loss(rec_a.float(), real_a.float()),
                 "G/cycle_B": m.lambda_cycle * F.l1_loss(rec_b.float(), real_b.float())}
        if m.lambda_identity > 0:
            w = m.lambda_identity * m.lambda_cycle
            idt_a = G(to_channels(real_a, self.channels["B"]), "BA")
            idt_b = G(to_channels(real_b, self.channels["A"]), "AB")
            terms["G/idt_A"] = w * F.l1_loss(idt_a.float(), real_a.float())
            terms["G/idt_B"] = w * F.l1_loss(idt_b.float(), real_b.float())
        return terms

    # -- sampling ------------------------------------------------------------------------------

    def grid_inputs(self, seed: int) -> tuple[dict, int]:
        """The first model.grid_rows test images of each domain (fixed; `seed` is not needed)."""
        n = self.model_cfg.grid_rows
        a = first_images(self.cfg, self.cfg.data.domain_a, n, self.device)["image"]
        b = first_images(self.cfg, self.cfg.data.domain_b, n, self.device)["image"]
        n = min(len(a), len(b))
        return {"A": a[:n], "B": b[:n]}, 4

    def generate(self, G, inputs: dict) -> torch.Tensor:
        """Per pair: real_A, fake_B, rec_A, idt_A, real_B, fake_A, rec_B, idt_B (rows of 4), shown in the
        larger channel count of the two domains."""
        a, b = inputs["A"], inputs["B"]
        fake_b, fake_a = G(a, "AB"), G(b, "BA")
        rows = [a, fake_b, G(fake_b, "BA"), G(to_channels(a, self.channels["B"]), "BA"),
                b, fake_a, G(fake_a, "AB"), G(to_channels(b, self.channels["A"]), "AB")]
        c = max(self.channels.values())
        return torch.stack([to_channels(x.float(), c) for x in rows], dim=1).flatten(0, 1)

    # -- the user's own images (launch/sample.py --input) --------------------------------------

    DIRECTIONS = {"a2b": ("A", "AB"), "b2a": ("B", "BA")}  # --direction -> (source domain, generator)

    def _direction(self, condition: Condition) -> tuple[str, str]:
        if condition.cls is not None or condition.attrs:
            raise ConfigError("--class/--attrs: a cyclegan run translates between two domains; "
                              "choose the way with --direction a2b|b2a")
        return self.DIRECTIONS[condition.direction or "a2b"]

    def input_channels(self, condition: Condition) -> int:
        return self.channels[self._direction(condition)[0]]

    def translate(self, G, images: torch.Tensor, condition: Condition) -> torch.Tensor:
        """Each image (of the source domain's channels) by G_AB (--direction a2b, the default) or G_BA."""
        return G(images, self._direction(condition)[1])


# ----------------------------------------------------------------------------- measurement


@torch.no_grad()
def translation_accuracy(family: CycleGAN, judges: dict, num_samples: int = 0, batch_size: int = 256) -> dict:
    """How often a class judge still recognises translated test images (digits <-> digits-m).

    `judges`: {"A": classifier family trained on domain A, "B": ... on domain B} (either may be left
    out). For each test image of A (its first num_samples, 0 = all) G_AB translates it and judge B
    names its class; likewise B -> A with judge A. Returns acc_AB, acc_BA, and for reference each
    judge's accuracy on its own domain's real test images (acc_real_A, acc_real_B) and on the other
    domain's images with only the channels converted (acc_A_as_B, acc_B_as_A: what translation adds)."""
    G = family.nets["G"].eval()
    out = {}
    for src, dst in (("A", "B"), ("B", "A")):
        judge = judges.get(dst)
        if judge is None:
            continue
        net = judge.nets["net"].eval()
        if judge.info.channels != family.channels[dst]:
            raise ConfigError(f"the judge for domain {dst} takes {judge.info.channels}-channel images; "
                              f"domain {dst} has {family.channels[dst]}")
        if judge.info.class_names != family.info[src].class_names:
            raise ConfigError(f"the judge for domain {dst} knows classes {list(judge.info.class_names)}; "
                              f"domain {src} has {list(family.info[src].class_names)}")
        data = family.cfg.data
        root = {"A": data.domain_a, "B": data.domain_b}
        counts = {"translated": 0, "as_is": 0, "real": 0, "n": 0, "n_real": 0}
        for which, key in ((src, "n"), (dst, "n_real")):
            info = load_info(dataclasses.replace(data, root=root[which]))
            split = data.eval_split if info.splits.get(data.eval_split) else data.train_split
            for batch in eval_batches(info.splits[split], batch_size, info, family.image_size, crop=data.crop):
                if num_samples and counts[key] >= num_samples:
                    break
                x, y = batch["image"].to(family.device), batch["label"].to(family.device)
                if num_samples:
                    x, y = x[:num_samples - counts[key]], y[:num_samples - counts[key]]
                counts[key] += len(y)
                if which == src:
                    counts["translated"] += int((net(G(x, src + dst)).argmax(1) == y).sum())
                    counts["as_is"] += int((net(to_channels(x, family.channels[dst])).argmax(1) == y).sum())
                else:
                    counts["real"] += int((net(x).argmax(1) == y).sum())
        out[f"acc_{src}{dst}"] = counts["translated"] / max(counts["n"], 1)
        out[f"acc_{src}_as_{dst}"] = counts["as_is"] / max(counts["n"], 1)
        out[f"acc_real_{dst}"] = counts["real"] / max(counts["n_real"], 1)
        out[f"num_{src}"] = counts["n"]
    return out
