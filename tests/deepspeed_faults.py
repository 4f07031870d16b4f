"""launch/train.py with the classifier's loss NaN from its Nth call on, for tests/test_deepspeed_runs.py.

    accelerate launch --config_file launch/deepspeed/zero2.yaml --mixed_precision bf16 \
        tests/deepspeed_faults.py N recipes/classifier_digits.yaml key=value ...
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "launch"))
import train  # noqa: E402

from distgen.families.classifier import Classifier  # noqa: E402

first_nan, argv = int(sys.argv[1]), sys.argv[2:]
original_loss = Classifier.loss
calls = {"n": 0}


def nan_loss(self, batch, nets):
    calls["n"] += 1
    terms = original_loss(self, batch, nets)
    if calls["n"] >= first_nan:
        terms = {k: v * float("nan") for k, v in terms.items()}
    return terms


Classifier.loss = nan_loss
sys.exit(train.main(argv))
