"""Accuracy of translated test images as judged by `classifier` runs (image-to-image families).

    python launch/translate_acc.py CYCLEGAN_RUN --judge-a JUDGE_RUN_A --judge-b JUDGE_RUN_B [--num-samples N]
    python launch/translate_acc.py STARGAN_RUN --judge JUDGE_RUN [--num-samples N]

cyclegan: judge B (trained on domain B, e.g. data.root=data/digits-m) names the class of each test image
    of A translated by G_AB -> acc_AB; judge A likewise for B -> A -> acc_BA. Also each judge on its own
    domain's real test images (acc_real_A/B) and on the other domain's images with only the channels
    converted (acc_A_as_B, acc_B_as_A), so the figure can be read against both.
    (distgen.families.cyclegan.translation_accuracy)
stargan: the judge (recipes/classifier_celeba_attrs.yaml; for the digits smoke a class judge) checks
    the asked-for attribute of every test image translated to every selected attribute -> attr_acc,
    attr_acc_<name>, attr_acc_real. (distgen.families.stargan.attribute_accuracy)
Prints one JSON line and merges it into RUN_DIR/eval/step_<N>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from distgen.checkpoint import load_run
from distgen.errors import ConfigError, DataError
from distgen.families.cyclegan import translation_accuracy
from distgen.families.stargan import attribute_accuracy


def judge(run_dir: str):
    cfg, family, _ = load_run(run_dir, "latest")
    if cfg.family != "classifier":
        raise ConfigError(f"judge '{run_dir}' is a '{cfg.family}' run, not a classifier run")
    return family


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", default="latest")
    parser.add_argument("--judge-a", default="", help="cyclegan: classifier run trained on domain A")
    parser.add_argument("--judge-b", default="", help="cyclegan: classifier run trained on domain B")
    parser.add_argument("--judge", default="", help="stargan: classifier run (model.target: attrs, or class)")
    parser.add_argument("--num-samples", type=int, default=0, help="test images per domain (0 = all)")
    args = parser.parse_args(argv)
    try:
        cfg, family, step = load_run(args.run_dir, args.checkpoint)
        if cfg.family == "cyclegan":
            judges = {k: judge(d) for k, d in (("A", args.judge_a), ("B", args.judge_b)) if d}
            if not judges:
                raise ConfigError("a cyclegan run needs --judge-a and/or --judge-b (classifier runs)")
            out = translation_accuracy(family, judges, args.num_samples)
        elif cfg.family == "stargan":
            if not args.judge:
                raise ConfigError("a stargan run needs --judge (a classifier run)")
            out = attribute_accuracy(family, judge(args.judge), args.num_samples)
        else:
            raise ConfigError(f"'{args.run_dir}' is a '{cfg.family}' run; this measures cyclegan and stargan runs")
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = {"step": step, **out}
    path = Path(args.run_dir) / "eval" / f"step_{step}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**previous, **out}, indent=1))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
