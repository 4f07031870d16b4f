"""Sample quality measured by the digit judge: a Fréchet distance in its features, and class coverage.

    python launch/evaluate.py RUN_DIR --metrics judge_fid,coverage [--classifier JUDGE_RUN] [--num-samples N]

The judge is a `classifier` run (recipes/classifier_digits.yaml; eval.classifier names it). On the
embedded digits InceptionV3's ImageNet features mean little and its weights are a download, while
the judge knows digits:
  judge_fid  Fréchet distance between the judge's penultimate features (the pooled conv features
             before its last linear layer) of num-samples generated images and of every image of
             data.eval_split. Computed by torch-fidelity: JudgeFeatures is a torch-fidelity feature
             extractor (FeatureExtractorBase, registered as "distgen-judge"), the statistics and the
             distance are torch-fidelity's FID functions. Outside distgen the same number comes from
             torch_fidelity.calculate_metrics(input1=..., input2=..., fid=True,
             feature_extractor="distgen-judge", feature_extractor_weights_path=JUDGE_RUN).
  coverage   the judge's class histogram of the generated images against uniform:
             coverage_classes (classes that receive at least a tenth of a uniform share),
             coverage_kl (KL(histogram || uniform), nats; 0 = uniform, log(K) = one class only),
             coverage_tv (total variation distance to uniform, 0..1).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_featuresdict_to_statistics, fid_statistics_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from distgen.errors import ConfigError

NAME = "distgen-judge"
FEATURES = ("penultimate", "logits")
JUDGE_METRICS = ("judge_fid", "coverage")
COVERED_SHARE = 0.1  # a class is covered when it gets >= this fraction of its uniform share N/K


class JudgeFeatures(FeatureExtractorBase):
    """The judge's penultimate features and logits of uint8 images (N, C, H, W), as torch-fidelity expects.

    Built by torch-fidelity (create_feature_extractor -> cls(name, features, **kwargs)) with
    feature_extractor_weights_path=JUDGE_RUN_DIR, or directly with `judge=` a loaded classifier family.
    Grey <-> RGB and size are adapted to what the judge was trained on; pixels go to [-1, 1] as in training."""

    def __init__(self, name: str = NAME, features_list=("penultimate",), judge=None,
                 feature_extractor_weights_path: str | None = None, **_):
        super().__init__(name, list(features_list))
        if judge is None:
            judge = load_judge(feature_extractor_weights_path)
        net = judge.nets["net"]
        if not (isinstance(net, torch.nn.Sequential) and isinstance(net[-1], torch.nn.Linear)):
            raise ConfigError("the judge's net must end in a Linear layer (a run of recipes/classifier_digits.yaml)")
        self.body, self.head = net[:-1], net[-1]
        self.channels, self.size = judge.info.channels, judge.image_size
        self.class_names = tuple(judge.info.class_names)

    @staticmethod
    def get_provided_features_list():
        return FEATURES

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": "penultimate", "kid": "penultimate", "prc": "penultimate", "isc": "logits"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, images: torch.Tensor):
        x = images.to(next(self.head.parameters()).device).float().div(127.5).sub(1.0)
        if x.shape[1] != self.channels:  # torch-fidelity hands over RGB; a grey judge sees their mean
            x = x.mean(1, keepdim=True) if self.channels == 1 else x.expand(-1, self.channels, -1, -1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        feats = self.body(x).float()
        out = {"penultimate": feats, "logits": self.head(feats).float()}
        return tuple(out[name] for name in self.features_list)


if NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(NAME, JudgeFeatures)


JUDGE_RECIPE = "recipes/classifier_digits.yaml"
JUDGE_DIR = "runs/demo/classifier_digits"  # where `make demo` and recipes/quickstart.yaml keep it


def require_judge(run_dir: str | Path | None, metric: str, flag: bool = False) -> None:
    """A judge run that is there and trained, or one line that says what the judge is and how to get it:
    the command that trains it, and where to point at it (a new user's first `--metrics acc`)."""
    source = "--classifier" if flag else "eval.classifier"
    train = f"python launch/train.py {JUDGE_RECIPE} run.dir={run_dir or JUDGE_DIR}"
    if not run_dir:
        raise ConfigError(f"metric '{metric}' is judged by a classifier run (eval.classifier's judge), and this run "
                          f"names none: train one with `{train}` (make demo does), then pass --classifier "
                          f"{JUDGE_DIR} or set eval.classifier={JUDGE_DIR}")
    run_dir = Path(run_dir)
    missing = ("does not exist" if not run_dir.exists() else "is not a run dir (no config.yaml)"
               if not (run_dir / "config.yaml").is_file() else "has no checkpoint yet"
               if not (run_dir / "checkpoints" / "latest" / "meta.json").is_file() else "")
    if missing:
        raise ConfigError(f"metric '{metric}' is judged by {source}'s classifier run '{run_dir}', which {missing}: "
                          f"train it with `{train}` (make demo does), or pass --classifier RUN_DIR of a "
                          f"trained classifier run")


def load_judge(run_dir: str | Path | None, device: str | torch.device = "cpu"):
    """The classifier family of a judge run, in eval mode."""
    from distgen.checkpoint import load_run  # the family registry: only when a judge is loaded

    require_judge(run_dir, "judge_fid/coverage")
    cfg, judge, _ = load_run(run_dir, "latest", device=device)
    if cfg.family != "classifier" or cfg.model.target != "class":
        raise ConfigError(f"judge '{run_dir}' is a '{cfg.family}' run predicting "
                          f"{getattr(cfg.model, 'target', 'nothing')}, not a class classifier run")
    for net in judge.nets.values():
        net.eval()
    return judge


@torch.no_grad()
def features(extractor: JudgeFeatures, images: torch.Tensor, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """{feature: float32 CPU rows} of uint8 images, in order."""
    parts = [extractor.convert_features_tuple_to_dict(extractor(images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
    return {name: torch.cat([p[name].cpu() for p in parts]) for name in extractor.get_requested_features_list()}


def frechet(generated: dict, reference: dict) -> float:
    """torch-fidelity's FID statistics and distance, on the judge's penultimate features."""
    if len(generated["penultimate"]) < 2 or len(reference["penultimate"]) < 2:
        raise ConfigError("judge_fid needs at least 2 generated and 2 reference images")
    layer = JudgeFeatures.get_default_feature_layer_for_metric("fid")
    stats = [fid_featuresdict_to_statistics(f, layer) for f in (generated, reference)]
    return float(fid_statistics_to_metric(*stats, False)[KEY_METRIC_FID])


def coverage(logits: torch.Tensor, class_names: tuple[str, ...]) -> dict:
    """The judge's class histogram of the images against uniform."""
    k = len(class_names)
    counts = torch.bincount(logits.argmax(1), minlength=k).double()
    p = counts / counts.sum()
    kl = float(sum(pi * math.log(pi * k) for pi in p.tolist() if pi > 0))
    return {"coverage_classes": int((counts >= COVERED_SHARE * counts.sum() / k).sum()),
            "coverage_kl": round(kl, 6), "coverage_tv": round(float(0.5 * (p - 1 / k).abs().sum()), 6),
            **{f"coverage_class_{name}": round(float(share), 4) for name, share in zip(class_names, p)}}


def real_images(data_cfg, image_size: int, batch_size: int = 256) -> torch.Tensor:
    """Every image of data.eval_split as uint8, as evaluation sees them (centre crop, no augmentation)."""
    from distgen.data import eval_batches, load_info, split_urls
    from distgen.evaluation.inception import to_uint8

    info = load_info(data_cfg)
    urls = split_urls(info, data_cfg.eval_split, "data.eval_split")
    return torch.cat([to_uint8(b["image"]) for b in eval_batches(urls, batch_size, info, image_size,
                                                                 crop=data_cfg.crop)])


def judge_metrics(names, cfg, family, judge_dir: str, num_samples: int, seed: int) -> dict:
    """judge_fid and/or coverage of a run's generator (one process; no collectives)."""
    from distgen.evaluation.fidelity import generate_slice, sample_inputs

    if not hasattr(family, "GENERATOR"):
        raise ConfigError(f"metrics {', '.join(names)} score generated images; family '{cfg.family}' generates none")
    extractor = JudgeFeatures(features_list=FEATURES, judge=load_judge(judge_dir, family.device))
    if tuple(family.info.class_names) not in ((), extractor.class_names):
        raise ConfigError(f"judge '{judge_dir}' knows classes {list(extractor.class_names)}, the run's data has "
                          f"{list(family.info.class_names)}: use a judge trained on the same data")
    generated_images = generate_slice(family, family.nets[family.GENERATOR], sample_inputs(family, num_samples, seed),
                                      0, num_samples)
    generated = features(extractor, generated_images)
    out: dict = {"judge_num_samples": num_samples}
    if "judge_fid" in names:
        reference = features(extractor, real_images(cfg.data, family.image_size))
        out.update({"judge_fid": frechet(generated, reference), "judge_num_reference": len(reference["penultimate"])})
    if "coverage" in names:
        out.update(coverage(generated["logits"], extractor.class_names))
    return out
