"""launch/report.py keeps bookkeeping numbers of an evaluation (how many test images, samples, pairs) out of the
learning curves and the sweep's default metrics: the VAE's `num_test` was drawn as a flat "curve"."""
from __future__ import annotations

import json

from test_report import report, write_run


def test_eval_counts_are_not_drawn_as_curves_nor_compared(tmp_path, monkeypatch):
    run_dir = write_run(tmp_path / "run")
    extra = {"mse": 0.05, "num_test": 360, "num_pairs": 12, "pixel_threshold": 16, "pixel_size": 32}
    for path in (run_dir / "eval").glob("step_*.json"):  # a VAE / pixel evaluation's keys beside fid
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    rows = [{**r, **{f"eval/{k}": v for k, v in extra.items()}} if "eval/fid" in r else r for r in rows]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    drawn: list[str] = []
    real = report.plot_panels

    def record(panels, path, *args, **kwargs):
        drawn.extend(line for _, series in panels for line in series)
        return real(panels, path, *args, **kwargs)

    monkeypatch.setattr(report, "plot_panels", record)
    md, _ = report.build(run_dir)
    assert "eval/fid" in drawn and "eval/mse" in drawn
    assert not {"eval/num_test", "eval/num_pairs", "eval/pixel_threshold", "eval/pixel_size"} & set(drawn)
    assert "num_test" in md.read_text()  # still in the table of results
    run = type("Run", (), {"final": {f"eval/{k}": 1.0 for k in ("fid", "mse", *extra)}})
    assert report.default_metrics([run]) == ["eval/fid", "eval/mse"]
