"""Runs launch/train.py with one injected fault, for the reliability tests (never imported by distgen).

    python tests/faults.py FAULT recipes/X.yaml key=value ...

FAULT: kill_in_save (SIGKILL in the middle of the second checkpoint write), disk_full (the second
checkpoint write fails with ENOSPC), nan_once (D's loss is NaN at step 3 only), nan_always (from step 3 on),
overflow_above_64 (D's loss is inf while the loss scale is above 64: an fp16 overflow that loss-scale
backoff cures). With FAULT_CPU_SCALER=S the accelerator gets a CPU GradScaler with initial scale S, as
Accelerate gives fp16 runs on CUDA (it gives none on a CPU), so the loop's fp16 path runs here.
"""
import errno
import os
import signal
import sys
from pathlib import Path

from accelerate import Accelerator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "launch"))
import train  # noqa: E402

from distgen.families.base import loss_scale  # noqa: E402
from distgen.families.dcgan import DCGAN  # noqa: E402

fault, argv = sys.argv[1], sys.argv[2:]
saves = {"n": 0}
original_save = Accelerator.save_state


def faulty_save(self, output_dir=None, **kwargs):
    saves["n"] += 1
    if saves["n"] == 2:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"half a file")
        if fault == "kill_in_save":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "disk_full":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return original_save(self, output_dir, **kwargs)


original_d_terms = DCGAN.d_terms
calls = {"n": 0}


def nan_d_terms(self, real_logit, fake_logit):
    calls["n"] += 1
    terms = original_d_terms(self, real_logit, fake_logit)
    if fault == "overflow_above_64":
        if float(loss_scale()) > 64:  # the GradScaler's scale, which the stepper hands the family
            terms["D/real"] = terms["D/real"] * float("inf")
    elif calls["n"] == 3 or (fault == "nan_always" and calls["n"] >= 3):
        terms["D/real"] = terms["D/real"] * float("nan")
    return terms


if os.environ.get("FAULT_CPU_SCALER"):
    import torch

    from distgen.loops import adversarial

    original_make = adversarial.make_accelerator

    def make_with_scaler(cfg, style="single"):
        acc = original_make(cfg, style)
        acc.scaler = torch.amp.GradScaler("cpu", init_scale=float(os.environ["FAULT_CPU_SCALER"]))
        return acc

    adversarial.make_accelerator = make_with_scaler


Accelerator.save_state = faulty_save
DCGAN.d_terms = nan_d_terms if fault.startswith(("nan", "overflow")) else original_d_terms
sys.exit(train.main(argv))
