"""launch/submit.py --deepspeed on the real one-node SLURM (the `slurm` fixture of tests/test_slurm.py starts it):
a CPU-only job of 2 DeepSpeed ZeRO-2 processes trains the tiny classifier to the end, ranks in sync."""
from __future__ import annotations

import json
import re
import sys

from conftest import metrics, run
from test_slurm import _job, _log, _wait, slurm  # noqa: F401  (slurm: the fixture)


def test_a_deepspeed_job_on_slurm_trains_two_ranks_in_sync(slurm, digits, tmp_path):  # noqa: F811
    run_dir = tmp_path / "run"
    submitted = run([sys.executable, "launch/submit.py", "recipes/classifier_digits.yaml", "model.width=8",
                     "train.batch_size=32", f"data.root={digits}", f"run.dir={run_dir}", "train.steps=4",
                     "log.every=2", "eval.every=4", "run.checkpoint_every=4", "log.sample_every=100",
                     "--deepspeed", "launch/deepspeed/zero2.yaml", "--gpus-per-node", "0", "--processes-per-node",
                     "2", "--time", "20", "--signal-seconds", "60", "--log-dir", str(tmp_path / "logs")])
    assert submitted.returncode == 0, submitted.stderr
    job = re.search(r"Submitted batch job (\d+)", submitted.stdout).group(1)
    _wait(f"job {job} to end", lambda: _job(job).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"),
          tmp_path)
    assert _job(job)["JobState"] == "COMPLETED" and _job(job)["ExitCode"] == "0:0", _log(tmp_path)[-4000:]
    ranks = json.loads((run_dir / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and ranks["in_sync"]
    assert [r["step"] for r in metrics(run_dir) if "cls" in r] == [2, 4]
    assert (run_dir / "checkpoints" / "latest" / "pytorch_model").is_dir()
