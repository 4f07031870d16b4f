"""Evaluate a run's checkpoint and write eval/step_<N>.json (flat keys), printing the same JSON.

    python launch/evaluate.py RUN_DIR [--checkpoint latest|step_<N>|PATH] [--metrics fid,isc,kid,prc,acc,test]
    python launch/evaluate.py CYCLEGAN_MAPS_RUN --metrics pixel [--pixel-threshold 5]
        [--num-samples N] [--inception-weights PATH] [--save-samples DIR] [--save-reference DIR]
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 launch/evaluate.py RUN_DIR --metrics fid ...

Metrics:
  fid, isc, kid, prc  torch-fidelity's FID, Inception Score, KID and precision/recall of num-samples
        generated images against the recipe's data.eval_split (keys fid, isc_mean, isc_std, kid_mean,
        kid_std, precision, recall, f_score). Equal to torch_fidelity.calculate_metrics on the PNGs that
        --save-samples / --save-reference write, on any number of processes (distgen/evaluation/).
        Needs a local InceptionV3 weights file: --inception-weights PATH or $DISTGEN_INCEPTION_WEIGHTS.
  acc   accuracy of class-conditioned samples (num-samples split evenly over the classes) as judged
        by the `classifier` run named in the recipe's eval.classifier (or --classifier RUN_DIR);
        for a single-objective run, what its training loop measures on the test split(s): classifier
        acc (attrs: mean and per attribute), vae mse/kld, dann source_acc/target_acc.
  test  the same as acc (the name for vae and dann runs).
  judge_fid, coverage  Fréchet distance in the judge's (eval.classifier's) penultimate features to
        data.eval_split, and the judge's class histogram of the samples against uniform
        (distgen/evaluation/judge.py): sample quality of unconditional models on the digits.
  pixel  cyclegan on the paired maps: each test photo translated by G_AB at the run's image size
        (256 px) against its ground-truth map, on 0..255: rmse_AB (per-image RMSE, averaged) and
        pixel_acc_AB (share of pixels with every channel within --pixel-threshold, default 5, of the
        truth), num_pairs; every pair of data.eval_split unless --num-samples is given
        (distgen/evaluation/pixel.py).
Also writes eval/grid_step_<N>.png: the family's sample grid (ACGAN: rows = noise, columns = classes).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from distgen.checkpoint import load_run
from distgen.errors import ConfigError, DataError
from distgen.evaluation.fidelity import FIDELITY_METRICS, evaluate_generator
from distgen.evaluation.inception import resolve_weights
from distgen.evaluation.judge import JUDGE_METRICS, judge_metrics, require_judge
from distgen.evaluation.pixel import DEFAULT_THRESHOLD, PIXEL_METRICS, translation_pixels
from distgen.evaluation.reference import default_cache_dir
from distgen.loops.single import eval_sums, streams
from distgen.generation import generate, save_grid


@torch.no_grad()
def classify(judge, images: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    net = judge.nets["net"].eval()
    return torch.cat([net(images[i:i + chunk]).argmax(1) for i in range(0, len(images), chunk)])


def metric_acc(names, cfg, family, args, accel) -> dict:
    if not accel.is_main_process:  # a small job: the main process does it alone
        return {}
    if family.STYLE == "single":  # classifier, vae, dann: the family's own test-split measurements
        nets = {name: net.eval() for name, net in family.nets.items()}
        sums = eval_sums(family, nets, streams(type(family), cfg, "eval"), cfg, device=family.device)
        return {k: round(v, 6) for k, v in family.finish_eval({k: float(v) for k, v in sums.items()}).items()}
    if family.class_inputs is None or not family.num_classes:
        raise ConfigError(f"metric '{names[0]}' needs a class-conditioned family or a single-objective run; "
                          f"'{cfg.family}' is neither (fid, isc, kid, prc measure its samples)")
    judge_dir = args.classifier or cfg.eval.classifier
    require_judge(judge_dir, "acc", flag=bool(args.classifier))
    judge_cfg, judge, _ = load_run(judge_dir, "latest", device=family.device)
    if judge_cfg.family != "classifier":
        raise ConfigError(f"eval.classifier '{judge_dir}' is a '{judge_cfg.family}' run, not a classifier run")
    if judge.info.class_names != family.info.class_names:
        raise ConfigError(f"judge '{judge_dir}' knows classes {list(judge.info.class_names)}, the run "
                          f"generates {list(family.info.class_names)}")
    per_class = max(1, args.num_samples // family.num_classes)
    inputs = family.class_inputs(per_class, seed=args.seed)
    images = generate(family, family.nets[family.GENERATOR], inputs)
    pred = classify(judge, images)
    per = [(pred[inputs["y"] == c] == c).float().mean().item() for c in range(family.num_classes)]
    return {"acc": (pred == inputs["y"]).float().mean().item(), "num_samples": len(images),
            **{f"acc_class_{name}": round(a, 4) for name, a in zip(family.info.class_names, per)}}


def metric_images(names, cfg, family, args, accel) -> dict:
    """fid/isc/kid/prc together: one pass of generation and feature extraction for all of them."""
    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    return evaluate_generator(
        family, cfg, names, args.num_samples, args.inception_weights, rank=accel.process_index,
        world_size=accel.num_processes, gather=accel.gather,
        device=family.device, seed=args.seed, batch_size=args.batch_size, kid_subset_size=args.kid_subset_size,
        cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()),
        save_samples=args.save_samples, save_reference=args.save_reference, log=log)


def metric_judge(names, cfg, family, args, accel) -> dict:
    if not accel.is_main_process:  # a small job: the main process does it alone
        return {}
    require_judge(args.classifier or cfg.eval.classifier, ",".join(names), flag=bool(args.classifier))
    return judge_metrics(names, cfg, family, args.classifier or cfg.eval.classifier, args.num_samples, args.seed)


def metric_pixel(names, cfg, family, args, accel) -> dict:
    if not accel.is_main_process:  # a small job: the main process does it alone
        return {}
    return translation_pixels(family, args.pixel_threshold, args.requested_samples or 0,
                              batch_size=min(args.batch_size, 16))


# "test" reads better than "acc" for a VAE run's mse/kld; for single-objective runs both name the same thing.
METRICS = {"acc": metric_acc, "test": metric_acc, **{name: metric_images for name in FIDELITY_METRICS},
           **{name: metric_judge for name in JUDGE_METRICS}, **{name: metric_pixel for name in PIXEL_METRICS}}


def check_empty(folder: str | None, flag: str) -> None:
    """torch-fidelity scores every image in a folder: a folder with other files would not re-check."""
    if folder and Path(folder).exists() and any(Path(folder).iterdir()):
        raise ConfigError(f"{flag} '{folder}' is not empty; give a new or empty folder")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="latest")
    parser.add_argument("--metrics", default="acc", help=f"comma-separated: {', '.join(METRICS)}")
    parser.add_argument("--num-samples", type=int, default=None, help="default: the recipe's eval.num_samples")
    parser.add_argument("--classifier", default="",
                        help="judge run dir for acc, judge_fid, coverage (default: eval.classifier)")
    parser.add_argument("--seed", type=int, default=1234, help="noise seed of the generated samples")
    parser.add_argument("--inception-weights", default=None,
                        help="local InceptionV3 weights for fid/isc/kid/prc (default: $DISTGEN_INCEPTION_WEIGHTS)")
    parser.add_argument("--cache-dir", default=None,
                        help="reference-feature cache (default: $DISTGEN_CACHE_DIR or ~/.cache/distgen)")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write reference features")
    parser.add_argument("--save-samples", default=None, help="write the scored generated images here as PNGs")
    parser.add_argument("--save-reference", default=None, help="write the scored real images here as PNGs")
    parser.add_argument("--batch-size", type=int, default=64, help="images per InceptionV3 batch (pixel: per G_AB batch, at most 16)")
    parser.add_argument("--kid-subset-size", type=int, default=1000, help="lowered to the image count if larger")
    parser.add_argument("--pixel-threshold", type=float, default=DEFAULT_THRESHOLD,
                        help="pixel: a pixel is right when every channel is within this of the truth (0..255)")
    args = parser.parse_args(argv)
    accel = Accelerator()
    main_process = accel.is_main_process
    try:
        names = [m.strip() for m in args.metrics.split(",") if m.strip()]
        unknown = [m for m in names if m not in METRICS]
        if unknown:
            raise ConfigError(f"--metrics: unknown metric '{unknown[0]}'; valid: {', '.join(METRICS)}")
        if any(m in FIDELITY_METRICS for m in names):
            resolve_weights(args.inception_weights)  # no weights: stop now, before any work
        check_empty(args.save_samples, "--save-samples")
        check_empty(args.save_reference, "--save-reference")
        accel.wait_for_everyone()  # every rank has checked the folders before any rank writes
        # Accelerate names the CPU of a process "cpu:<rank>", which safetensors' loader refuses.
        device = torch.device("cpu") if accel.device.type == "cpu" else accel.device
        cfg, family, step = load_run(args.run_dir, args.checkpoint, device=device)
        args.requested_samples = args.num_samples  # pixel: every pair unless asked for fewer
        args.num_samples = args.num_samples or cfg.eval.num_samples
        out: dict = {"step": step}
        for fn in dict.fromkeys(METRICS[name] for name in names):  # each function once, in order
            out.update(fn([n for n in names if METRICS[n] is fn], cfg, family, args, accel))
        if main_process and family.grid_inputs is not None:
            inputs, cols = family.grid_inputs(cfg.run.seed)
            grid = save_grid(generate(family, family.nets[family.GENERATOR], inputs),
                             Path(args.run_dir) / "eval" / f"grid_step_{step}.png", cols)
            out["grid"] = str(grid)
    except (ConfigError, DataError) as exc:
        # every rank says it: an error on one rank only (its shard, its device) must not pass silently
        where = f"[rank {accel.process_index}] " if accel.num_processes > 1 else ""
        print(f"{where}error: {exc}", file=sys.stderr)
        return 2
    if main_process:
        path = Path(args.run_dir) / "eval" / f"step_{step}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        previous = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**previous, **out}, indent=1))
        print(json.dumps(out))
    # No rank leaves while another still uses the process group, and it is torn down cleanly: a
    # rank that simply exited first could abort in gloo's teardown ("terminate called"), and the
    # launcher then kills the others.
    accel.wait_for_everyone()
    accel.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
