"""Write images with a trained run's generator: new samples, or the user's own images translated.

    python launch/sample.py RUN_DIR --num 64 --out DIR [--class 3|NAME] [--attrs Name=1,...] [--seed 0] [--grid]
    python launch/sample.py CYCLEGAN_RUN --input DIR_OR_FILE --out DIR [--direction a2b|b2a]
    python launch/sample.py STARGAN_RUN --input DIR_OR_FILE --out DIR --attrs Blond_Hair=1,Male=0  (or --class K)
        [--checkpoint latest|step_<N>|PATH] [--no-ema] [--device cuda|cpu] [--overwrite]

Samples: --num PNGs sample_<i>.png (or with --grid one grid.png) from the generator EMA when the run
has one (--no-ema: the trained generator), drawn as evaluation draws them (distgen/generation.py):
the noise of `--seed`, a class-conditioned run's classes in turn unless --class names one (index or
class name), --attrs for attribute-conditioned ACGAN (Name=0|1; the others at random) and tag-
conditioned CGAN (hair=COLOUR,eye=COLOUR). Translation: every image of --input (a file or a folder's
image files; any size and mode: the largest centre square, resized to the run's image size and
converted to its channels as the training data is) becomes one PNG of the same stem in --out.
The conditioning flags each family takes are its own (the family's `sample_inputs`, `translate`):
a flag a run cannot use is one line naming it.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from distgen.checkpoint import load_run
from distgen.data.decoding import Transform
from distgen.errors import ConfigError, DataError
from distgen.families.base import Condition
from distgen.generation import CHUNK, generate_range, sampler, save_grid, save_images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
WHOLE_SQUARE = 1 << 30  # a crop side larger than any image: Transform then takes the largest centre square


def parse_attrs(text: str) -> tuple[tuple[str, str], ...]:
    """"Smiling=1,Male=0" -> (("Smiling", "1"), ("Male", "0")); values are checked by the family."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, value = item.partition("=")
        if not eq or not name.strip() or not value.strip():
            raise ConfigError(f"--attrs: '{item}' is not Name=value; e.g. --attrs Smiling=1,Male=0")
        pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


def pick_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device '{name}': not a torch device; e.g. cuda, cuda:1, cpu") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: this machine has no CUDA GPU; use --device cpu")
    return device


def image_files(source: Path) -> list[Path]:
    """--input: one image file, or a folder's image files (not its sub-folders) in name order."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ConfigError(f"--input '{source}': no such file or folder")
    files = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"--input '{source}': no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return files


def check_targets(paths: list[Path], overwrite: bool, inputs: list[Path] = ()) -> None:
    """Nothing is overwritten unless asked, and never an input image."""
    twice = [p for p, count in Counter(paths).items() if count > 1]
    if twice:
        raise ConfigError(f"two input images would both be written to '{twice[0]}' (the same file stem); "
                          f"rename one or translate them separately")
    clash = {p.resolve() for p in paths} & {p.resolve() for p in inputs}
    if clash:
        raise ConfigError(f"--out would overwrite the input image '{sorted(clash)[0]}'; give another --out folder")
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"'{existing[0]}' exists ({len(existing)} of the {len(paths)} files to write); "
                          f"give a new --out folder or pass --overwrite")


def load_image(path: Path, transform: Transform) -> torch.Tensor:
    """One user image as the run's data pipeline makes a training image: decoded to the run's channels,
    the largest centre square, resized to the run's size, [-1, 1] (1 C H W)."""
    try:
        pixels, _ = transform.decode({"png": path.read_bytes(), "__key__": path.name})  # any format PIL reads
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for an unreadable file
        raise DataError(f"--input '{path}': not an image this machine can read ({exc})") from None
    pixels, _ = transform.place(pixels)
    return transform.batch([pixels], [False], [{}])["image"]


def sample(family, G, args, condition: Condition, out: Path) -> list[Path]:
    n = args.num
    inputs = family.sample_inputs(n, args.seed, condition)
    width = len(str(n - 1))
    paths = [out / "grid.png"] if args.grid else [out / f"sample_{i:0{width}d}.png" for i in range(n)]
    check_targets(paths, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    grid = []
    with tqdm(total=n, unit="img", desc="sampling", file=sys.stderr) as bar:
        for lo in range(0, n, CHUNK):  # the chunks of distgen/generation.py: image i is evaluate.py's image i
            images = generate_range(family, G, inputs, lo, min(lo + CHUNK, n))
            if args.grid:
                grid.append(images.cpu())
            else:
                save_images(images, paths[lo:lo + len(images)])
            bar.update(len(images))
    if args.grid:
        save_grid(torch.cat(grid), paths[0], args.nrow or math.ceil(math.sqrt(n)))
    return paths


@torch.no_grad()
def translate(family, G, args, condition: Condition, out: Path) -> list[Path]:
    files = image_files(Path(args.input))
    paths = [out / f"{f.stem}.png" for f in files]
    check_targets(paths, args.overwrite, files)
    transform = Transform(family.input_channels(condition), family.image_size, crop=WHOLE_SQUARE)
    copy_ = sampler(G)  # the same generating copy as the sample grids (distgen/generation.py)
    with tqdm(total=len(files), unit="img", desc="translating", file=sys.stderr) as bar:
        for lo in range(0, len(files), args.batch_size):
            images = torch.cat([load_image(f, transform) for f in files[lo:lo + args.batch_size]]).to(family.device)
            result = family.translate(copy_, images, condition).float().clamp(-1, 1)
            out.mkdir(parents=True, exist_ok=True)  # not before: an unreadable first image leaves no folder
            save_images(result, paths[lo:lo + len(images)])
            bar.update(len(images))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True, help="folder the PNGs are written to")
    parser.add_argument("--checkpoint", default="latest", help="latest, step_<N> or a checkpoint folder")
    parser.add_argument("--num", type=int, default=64, help="images to sample (not with --input)")
    parser.add_argument("--class", dest="cls", default=None, help="class index or name (class-conditioned runs)")
    parser.add_argument("--attrs", default="", help="Name=value,...: attributes (0|1) or cgan tags (hair=..,eye=..)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of the samples")
    parser.add_argument("--grid", action="store_true", help="one grid.png instead of one file per sample")
    parser.add_argument("--nrow", type=int, default=0, help="images per grid row (default: about a square)")
    parser.add_argument("--input", default=None, help="translate this image file or folder of images")
    parser.add_argument("--direction", choices=("a2b", "b2a"), default=None, help="cyclegan: which generator")
    parser.add_argument("--batch-size", type=int, default=16, help="input images per generator call (--input)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--no-ema", action="store_true", help="the trained generator, not its EMA")
    parser.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    args = parser.parse_args(argv)
    try:
        if args.num < 1 or args.batch_size < 1:
            raise ConfigError(f"--num and --batch-size must be at least 1, got {args.num} and {args.batch_size}")
        if args.input is None and args.direction:
            raise ConfigError("--direction: only for translating images (--input DIR_OR_FILE)")
        if args.input is not None and args.grid:
            raise ConfigError("--grid: only for sampling; a translation writes one image per input")
        condition = Condition(args.cls, parse_attrs(args.attrs), args.direction)
        device = pick_device(args.device)
        cfg, family, step = load_run(args.run_dir, args.checkpoint, device=device, use_ema=not args.no_ema)
        if family.GENERATOR is None:
            raise ConfigError(f"'{args.run_dir}' is a '{cfg.family}' run: it has no generator to sample from "
                              f"(sample.py takes GAN, VAE, CycleGAN and StarGAN runs)")
        G = family.nets[family.GENERATOR]
        if args.input is not None:
            if family.translate is None:
                raise ConfigError(f"--input: this {cfg.family} run generates from noise and translates no images; "
                                  f"leave --input out")
            paths = translate(family, G, args, condition, Path(args.out))
        else:
            if family.translate is not None:
                raise ConfigError(f"this {cfg.family} run translates images: give them with --input DIR_OR_FILE")
            paths = sample(family, G, args, condition, Path(args.out))
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} file(s) to {args.out} from step {step} of {args.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
