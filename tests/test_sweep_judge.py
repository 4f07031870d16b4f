"""The judge-feature Fréchet distance (torch-fidelity feature extractor) and class coverage."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch_fidelity

from conftest import TINY_CLS, TINY_GAN, script, train

from distgen.config import DataConfig
from distgen.evaluation import judge as J


@pytest.fixture(scope="module")
def judge_dir(digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("judge") / "classifier"
    train("classifier_digits", *TINY_CLS, "train.steps=30", "run.checkpoint_every=30", "eval.every=30",
          f"data.root={digits}", f"run.dir={out}")
    return out


class Images(torch.utils.data.Dataset):
    """uint8 images as torch-fidelity reads them from files: RGB (a grey image repeated)."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].expand(3, -1, -1).contiguous()


def test_judge_fid_through_torch_fidelity(digits, judge_dir):
    real = J.real_images(DataConfig(root=str(digits)), 32)
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def fid(other):
        return torch_fidelity.calculate_metrics(
            input1=Images(other), input2=Images(real), fid=True, feature_extractor=J.NAME,
            feature_extractor_weights_path=str(judge_dir), cuda=False, verbose=False, cache=False, save_cpu_ram=True,
            datasets_root=str(judge_dir))["frechet_inception_distance"]

    itself, against_noise = fid(real), fid(noise)
    assert abs(itself) < 1e-6
    assert against_noise > 1.0
    extractor = J.JudgeFeatures(features_list=J.FEATURES, judge=J.load_judge(judge_dir))
    ours = J.frechet(J.features(extractor, noise), J.features(extractor, real))  # what evaluate.py computes
    assert ours == pytest.approx(against_noise, rel=1e-5)


def test_coverage_against_uniform():
    names = tuple(str(i) for i in range(10))
    one_class = torch.zeros(100, 10)
    one_class[:, 3] = 1.0
    c = J.coverage(one_class, names)
    assert c["coverage_classes"] == 1 and c["coverage_kl"] == pytest.approx(math.log(10), abs=1e-6)
    assert c["coverage_tv"] == pytest.approx(0.9) and c["coverage_class_3"] == 1.0
    uniform = torch.eye(10).repeat(10, 1)
    c = J.coverage(uniform, names)
    assert c["coverage_classes"] == 10 and c["coverage_kl"] == pytest.approx(0) and c["coverage_tv"] == pytest.approx(0)
    half = torch.eye(10)[torch.tensor([0] * 50 + [1] * 45 + [2] * 5)]  # class 2 gets 5 of 100 images
    c = J.coverage(half, names)
    assert c["coverage_classes"] == 3  # covered: at least a tenth of a uniform share (0.1 * 100 / 10 = 1)


def test_evaluate_judge_metrics_on_a_generator(digits, judge_dir, tmp_path):
    run_dir = tmp_path / "dcgan"
    train("dcgan_digits_smoke", *TINY_GAN, "train.steps=4", "run.checkpoint_every=4", f"data.root={digits}",
          f"run.dir={run_dir}")
    result = script("evaluate", str(run_dir), "--metrics", "judge_fid,coverage",
                  "--classifier", str(judge_dir), "--num-samples", "100")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((run_dir / "eval" / "step_4.json").read_text())
    assert out["judge_fid"] > 0 and out["judge_num_samples"] == 100 and out["judge_num_reference"] == 359
    assert 1 <= out["coverage_classes"] <= 10 and 0 <= out["coverage_tv"] <= 0.9 + 1e-9
    assert sum(out[f"coverage_class_{i}"] for i in range(10)) == pytest.approx(1, abs=1e-3)
    missing = script("evaluate", str(run_dir), "--metrics", "judge_fid")
    assert missing.returncode == 2 and "--classifier" in missing.stderr and "eval.classifier" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
