"""In-training evaluation longer than run.collective_timeout on 2 processes: rank 0 computes the metrics
while the other rank waits in the loop's LongWait (eval.timeout), not in the next step's collective,
so the run lives (distgen/loops/waiting.py; tests/slow_eval.py makes rank 0's evaluation slow)."""
from __future__ import annotations

import json

from conftest import BIN, TINY_GAN, free_port, run

COLLECTIVE_TIMEOUT, EVALUATION = 15, 30  # seconds; the evaluation outlasts the collective timeout twice


def test_an_evaluation_longer_than_the_collective_timeout_does_not_kill_the_run(digits, tmp_path):
    run_dir = tmp_path / "slow"
    cmd = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           "tests/slow_eval.py", str(EVALUATION), "recipes/dcgan_digits_smoke.yaml", *TINY_GAN,
           f"data.root={digits}", f"run.dir={run_dir}", "train.steps=2", "log.every=2", "log.sample_every=100",
           "run.checkpoint_every=2", "eval.every=2", "eval.metrics=[fid]", f"eval.inception_weights={tmp_path}/w.pth",
           f"run.collective_timeout={COLLECTIVE_TIMEOUT}"]
    result = run(cmd, {"ACCELERATE_USE_CPU": "1"}, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads((run_dir / "eval" / "step_2.json").read_text())["fid"] == 1.0
    assert (run_dir / "checkpoints" / "step_2").is_dir()  # the collectives of the save after it ran


def test_prc_distances_run_on_the_given_device(monkeypatch):
    """PRC's N x N distances go to the accelerator's device (meta stands in for the GPU); FID stays numpy."""
    import torch

    from distgen.evaluation import fidelity

    seen = []

    def prc(generated, reference, layer, **kwargs):
        seen.extend([generated[layer].device.type, reference[layer].device.type])
        return {}

    monkeypatch.setattr(fidelity, "prc_featuresdict_to_metric", prc)
    layer = fidelity.layer_for("prc")
    features = {layer: torch.randn(5, 8)}
    fidelity.torch_fidelity_metrics(["prc"], features, features, 5, device="meta")
    assert seen == ["meta", "meta"]
