"""Evaluate a run's checkpoint and write eval/step_<N>.json (flat keys), printing the same JSON.

    python launch/evaluate.py RUN_DIR [--checkpoint latest|step_<N>|PATH] [--metrics acc] [--num-samples N]

Metrics available now:
  acc   accuracy of class-conditioned samples (num-samples split evenly over the classes) as judged
        by the `classifier` run named in the recipe's eval.classifier (or --classifier RUN_DIR);
        for a classifier run, its accuracy on the test split.
Also writes eval/grid_step_<N>.png: rows = noise vectors, columns = the classes in order.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from distgen.checkpoint import load_run
from distgen.data import eval_batches, load_info, split_urls
from distgen.errors import ConfigError, DataError
from distgen.samples import generate, save_grid


@torch.no_grad()
def classify(judge, images: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    net = judge.nets["net"].eval()
    return torch.cat([net(images[i:i + chunk]).argmax(1) for i in range(0, len(images), chunk)])


def metric_acc(cfg, family, args, out: dict) -> dict:
    if cfg.family == "classifier":  # the judge itself: accuracy on the real test split
        info = load_info(cfg.data)
        correct = total = 0
        for batch in eval_batches(split_urls(info, cfg.data.eval_split, "data.eval_split"), 256, info,
                                  cfg.data.image_size):
            correct += int((classify(family, batch["image"]) == batch["label"]).sum())
            total += len(batch["label"])
        return {"acc": correct / max(total, 1)}
    if not hasattr(family, "class_inputs"):
        raise ConfigError(f"metric 'acc' needs a class-conditioned family; '{cfg.family}' is not one")
    judge_dir = args.classifier or cfg.eval.classifier
    if not judge_dir:
        raise ConfigError("metric 'acc' needs a judge: set eval.classifier=RUN_DIR in the recipe or pass "
                          "--classifier RUN_DIR (a run of recipes/classifier_digits.yaml)")
    judge_cfg, judge, _ = load_run(judge_dir, "latest")
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


METRICS = {"acc": metric_acc}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="latest")
    parser.add_argument("--metrics", default="acc", help=f"comma-separated: {', '.join(METRICS)}")
    parser.add_argument("--num-samples", type=int, default=None, help="default: the recipe's eval.num_samples")
    parser.add_argument("--classifier", default="", help="judge run dir for 'acc' (default: eval.classifier)")
    parser.add_argument("--seed", type=int, default=1234, help="noise seed of the generated samples")
    args = parser.parse_args(argv)
    try:
        names = [m.strip() for m in args.metrics.split(",") if m.strip()]
        unknown = [m for m in names if m not in METRICS]
        if unknown:
            raise ConfigError(f"--metrics: unknown metric '{unknown[0]}'; valid: {', '.join(METRICS)}")
        cfg, family, step = load_run(args.run_dir, args.checkpoint)
        args.num_samples = args.num_samples or cfg.eval.num_samples
        out: dict = {"step": step}
        for name in names:
            out.update(METRICS[name](cfg, family, args, out))
        if hasattr(family, "grid_inputs"):
            inputs, cols = family.grid_inputs(cfg.run.seed)
            grid = save_grid(generate(family, family.nets[family.GENERATOR], inputs),
                             Path(args.run_dir) / "eval" / f"grid_step_{step}.png", cols)
            out["grid"] = str(grid)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = Path(args.run_dir) / "eval" / f"step_{step}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**previous, **out}, indent=1))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
