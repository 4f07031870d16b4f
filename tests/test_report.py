"""launch/report.py on run dirs and sweep dirs written on disk in the loops' layouts, without training.

The files are the ones the loops write: config.yaml, run.json (distgen/loops/run_dir.py's RunRecord
writes it here), metrics.jsonl rows and eval/step_<N>.json (distgen/loops/history.py), the
fixed-noise grids samples/step_<N>.png, and a sweep's sweep.json (distgen/sweep.py's write_manifest
keys). Each test takes seconds.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import sys
import uuid
from pathlib import Path

import yaml
from PIL import Image

from conftest import ROOT

from distgen.loops.run_dir import RunRecord

sys.path.insert(0, str(ROOT / "launch"))
import report  # noqa: E402  (launch/report.py)

STEPS = 20


def write_run(run_dir: Path, *, lr: float = 2e-4, seed: int = 0, fid: tuple[float, ...] = (40.0, 30.0),
              grids: int = 2, grid_px: int = 64, noise: bool = False, steps: int = STEPS, last: int | None = None,
              why: str | None = None, rows: list[dict] | None = None) -> Path:
    """A run dir as a DCGAN run of `steps` steps leaves it after `last` (default: all): logged every
    5 steps, evaluated at 10, 20, ... (one eval per value of `fid`), `grids` grids evenly over the run."""
    last = steps if last is None else last
    (run_dir / "samples").mkdir(parents=True)
    (run_dir / "eval").mkdir()
    cfg = {"family": "dcgan", "model": {"z_dim": 16, "width": 8},
           "data": {"root": "data/digits", "num_workers": 2},
           "optim": {"name": "adam", "lr_g": 2e-4, "lr_d": lr},
           "train": {"steps": steps, "batch_size": 16}, "run": {"dir": str(run_dir), "seed": seed},
           "log": {"every": 5, "sample_every": 10}, "eval": {"every": 10, "metrics": ["fid"]},
           "recipe": "dcgan_digits_smoke"}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    if rows is None:
        rows = [{"step": s, "D/real": 0.7 - 0.01 * s + 0.001 * seed, "D/fake": 0.6 - 0.01 * s, "G/adv": 1.0 + 0.02 * s,
                 "D(x)": 0.6, "D(G(z))": 0.4, "nonfinite_skipped": 0.0, "img/s": 300.0 + s}
                for s in range(5, last + 1, 5)]
    with open(run_dir / "metrics.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            if row["step"] % 10 == 0 and row["step"] // 10 <= len(fid):  # History.write_eval's row and file
                result = {"fid": fid[row["step"] // 10 - 1], "num_samples": 1000, "num_reference": 1000}
                (run_dir / "eval" / f"step_{row['step']}.json").write_text(
                    json.dumps({"step": row["step"], **result}, indent=1))
                f.write(json.dumps({"step": row["step"], **{f"eval/{k}": v for k, v in result.items()}}) + "\n")
    for i in range(grids):
        step = (i + 1) * last // max(grids, 1)
        size = (grid_px, grid_px)
        image = (Image.frombytes("RGB", size, os.urandom(grid_px * grid_px * 3)) if noise
                 else Image.new("RGB", size, (i * 2 % 256, 128, 255 - i * 2 % 256)))
        image.save(run_dir / "samples" / f"step_{step}.png", compress_level=1)
    record = RunRecord(run_dir, {"world_size": 4, "machines": 2, "num_workers": 2, "mixed_precision": "bf16"}, steps)
    record.start(0, None)
    record.end(last, why)
    facts = json.loads((run_dir / "run.json").read_text())
    facts.update(command=["train.py", "recipes/dcgan_digits_smoke.yaml", f"run.dir={run_dir}", "optim.lr_d=2e-4"],
                 commit="0123456789abcdef0123456789abcdef01234567", commit_dirty=True, host="node17",
                 started="2026-05-01T10:00:00+00:00", ended="2026-05-01T11:02:03+00:00")
    (run_dir / "run.json").write_text(json.dumps(facts, indent=1))
    return run_dir


def html_text(page: str) -> str:
    """The page's text as a reader sees it (tags dropped, entities decoded)."""
    import html

    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_run_report_puts_the_runs_facts_at_the_top(tmp_path):
    run_dir = write_run(tmp_path / "run", last=15, why="SIGTERM (preempted)")
    facts = json.loads((run_dir / "run.json").read_text())
    facts["sessions"] = [{**{k: v for k, v in facts.items() if k != "sessions"}, "started": "2026-05-01T08:00:00+00:00",
                          "ended": "2026-05-01T08:30:00+00:00", "host": "node03"}]  # an earlier session, resumed
    (run_dir / "run.json").write_text(json.dumps(facts))
    md, page = report.build(run_dir)
    html_page, markdown = page.read_text(), md.read_text()
    top = html_text(html_page[:html_page.index("<img")])  # everything before the first figure
    assert "train.py recipes/dcgan_digits_smoke.yaml" in top and "optim.lr_d=2e-4" in top  # the command line
    assert "0123456789abcdef0123456789abcdef01234567 with uncommitted changes" in top
    assert "bf16" in top and "world size 4 on 2 machine(s)" in top and "data.num_workers 2" in top
    assert "1 h 32 min over 2 sessions" in top  # 08:00-08:30 and 10:00-11:02:03
    assert "2026-05-01T08:00:00+00:00" in top and "2026-05-01T11:02:03+00:00" in top and "node03, node17" in top
    assert "stopped early at step 15 of 20: SIGTERM (preempted)" in top and "last logged step 15 of 20" in top
    assert re.search(r"eval/fid\s+40\b", top)  # evaluated at step 10 only  # the final metrics (the newest evaluation)
    assert "<details><summary>Resolved config (config.yaml)" in html_page and "lr_d: 0.0002" in top
    assert markdown.index("stopped early at step 15") < markdown.index("![")
    assert "- **command**: `train.py recipes/dcgan_digits_smoke.yaml" in markdown


def test_a_series_zero_throughout_gets_no_panel(tmp_path, monkeypatch):
    rows = [{"step": s, "D/real": 0.5 + 0.01 * s, "G/adv": 1.0, "nonfinite_skipped": 0.0, "D/acc_real": 0,
             "img/s": 100.0} for s in (5, 10, 15, 20)]
    run_dir = write_run(tmp_path / "run", rows=rows)
    drawn: list[tuple[str, list[str]]] = []
    real = report.plot_panels

    def record(panels, path, *args, **kwargs):
        drawn.extend((title, list(lines)) for title, lines in panels)
        return real(panels, path, *args, **kwargs)

    monkeypatch.setattr(report, "plot_panels", record)
    md, page = report.build(run_dir)
    lines = [line for _, names in drawn for line in names]
    assert "D/real" in lines and "G/adv" in lines and "img/s" in lines  # constant but not zero: drawn
    assert "nonfinite_skipped" not in lines and "D/acc_real" not in lines
    assert not (run_dir / "report" / "curves_accuracy.png").exists()  # its only key is 0 throughout
    said = [line for line in md.read_text().splitlines() if line.startswith("Left out, 0 at every logged step")]
    assert said == ["Left out, 0 at every logged step: `nonfinite_skipped`, `D/acc_real`."]


def test_a_hundred_large_grids_keep_the_page_small_and_linked(tmp_path):
    run_dir = write_run(tmp_path / "run", steps=1000, grids=100, grid_px=512, noise=True)  # 100 x 0.8 MB of noise
    md, page = report.build(run_dir)
    size = page.stat().st_size
    assert size < 3_000_000, f"index.html is {size / 1e6:.1f} MB"
    html_page = page.read_text()
    links = re.findall(r'<a href="(\.\./samples/step_\d+\.png)"><img src="data:image/(?:png|jpeg);base64,', html_page)
    assert len(links) == 13 and links[0] == "../samples/step_10.png" and links[-1] == "../samples/step_1000.png"
    assert all((page.parent / link).is_file() for link in links)  # relative links to the full-size files
    for thumb in (run_dir / "report" / "thumbs").iterdir():
        assert Image.open(thumb).width <= 256
    assert len(list((run_dir / "report" / "thumbs").iterdir())) == 13
    assert "13 of the 100 fixed-noise grids" in md.read_text()


def write_sweep(root: Path) -> Path:
    """A finished 2 x 2 sweep (optim.lr_d x run.seed) in launch/sweep.py's layout with the default --root:
    the manifest names each run dir relative to the repository (runs/sweeps/<name>/<id>)."""
    name = f"grid-{uuid.uuid4().hex[:8]}"  # no such dir under the repository's runs/
    sweep_dir = root / name
    fids = {("1e-4", 0): 10.0, ("1e-4", 1): 12.0, ("3e-4", 0): 20.0, ("3e-4", 1): 26.0}
    runs = []
    for (lr, seed), fid in fids.items():
        run_id = f"lr_d={lr},seed={seed}"
        write_run(sweep_dir / run_id, lr=float(lr), seed=seed, fid=(fid + 5, fid), grids=2)
        runs.append({"id": run_id, "recipe": "recipes/dcgan_digits_smoke.yaml",
                     "overrides": [f"optim.lr_d={lr}", f"run.seed={seed}", f"run.dir=runs/sweeps/{name}/{run_id}",
                                   f"log.wandb.group={name}"],
                     "values": {"optim.lr_d": lr, "run.seed": str(seed)}, "dir": f"runs/sweeps/{name}/{run_id}",
                     "steps": STEPS, "status": "finished"})
    runs[0]["status"] = "failed"  # the first finished run of group 1e-4 is seed 1
    manifest = {"name": name, "recipes": {"recipes/dcgan_digits_smoke.yaml": []}, "fixed": ["train.steps=20"],
                "grid": {"optim.lr_d": ["1e-4", "3e-4"], "run.seed": ["0", "1"]}, "table": {}, "after": [],
                "runs": runs}
    (sweep_dir / "sweep.json").write_text(json.dumps(manifest, indent=1))
    return sweep_dir


def test_sweep_report_has_the_grouped_table_bands_and_a_grid_per_group(tmp_path, capsys):
    sweep_dir = write_sweep(tmp_path)
    report.build(sweep_dir / "lr_d=3e-4,seed=1")  # one run has its own report
    assert report.main([str(sweep_dir)]) == 0, capsys.readouterr().err
    page = (sweep_dir / "report" / "index.html").read_text()
    md = (sweep_dir / "report" / "index.md").read_text()
    assert "| optim.lr_d | n | eval/fid (mean ± std) |" in md  # by default the evaluation results
    rows = [line for line in md.splitlines() if line.startswith("| 0.000")]
    assert len(rows) == 2, md
    for row, values in zip(rows, ([10.0, 12.0], [20.0, 26.0])):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-2] == "2"  # n
        assert cells[-1] == f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"
    assert "grouped by" in md and "`optim.lr_d` (the swept keys but run.seed)" in md
    assert "4 in the grid: 1 failed, 3 finished (sweep.json); 4 with a run dir" in md
    assert "with uncommitted changes (4 runs)" in md and "4 h 08 min summed over the runs" in md
    assert (sweep_dir / "report" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert '<img src="data:image/png;base64,' in page and 'alt="Learning curves by group"' in page
    grids = re.findall(r'<a href="([^"]+)"><img src="data:image/(?:png|jpeg);base64,[^"]*" alt="([^"]+)"', page)
    assert [alt for _, alt in grids] == ["lr_d=0.0001: lr_d=1e-4,seed=1, step 20",
                                         "lr_d=0.0003: lr_d=3e-4,seed=0, step 20"]
    assert [href for href, _ in grids] == ["../lr_d=1e-4,seed=1/samples/step_20.png",
                                           "../lr_d=3e-4,seed=0/samples/step_20.png"]
    assert all((sweep_dir / "report" / href).is_file() for href, _ in grids)
    assert page.count('<a href="../lr_d=3e-4,seed=1/report/index.html">report</a>') == 1
    assert (sweep_dir / "report" / "index.html").stat().st_size < 3_000_000


def test_a_dir_that_is_neither_is_named_in_the_error(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"'{tmp_path}' is neither a run dir (no config.yaml) nor a sweep dir (no sweep.json)" in err
    run_dir = write_run(tmp_path / "run")
    assert report.main([str(run_dir), "--group-by", "optim.lr_d"]) == 2
    assert "for a sweep dir" in capsys.readouterr().err
    (run_dir / "config.yaml").write_text("family: [dcgan\n")
    assert report.main([str(run_dir)]) == 2
    assert f"{run_dir / 'config.yaml'}: not valid YAML" in capsys.readouterr().err
