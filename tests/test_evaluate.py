"""Evaluation: FID/IS/KID/PRC equal torch-fidelity's on 1 and 2 processes, content-keyed reference cache,
the offline error, report.py and compare.py (run dirs and recorded W&B runs).

Offline: InceptionV3 weights are random, written by the test, with BatchNorm statistics measured on
digits and noise first (an uncalibrated random net gives every image the same features, and equal
zeros would prove nothing); the tests assert the numbers are far from degenerate. Image sets are
tiny (20 generated, 20 real): InceptionV3 runs at about 3 images/s on 2 CPU cores.
"""
from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import socket
import statistics
from pathlib import Path

import pytest
import torch
import torch_fidelity
import yaml
from PIL import Image
from threadpoolctl import threadpool_limits
from torch import nn

from conftest import BIN, ROOT, TINY_GAN, launch_module, run, script, train
from distgen import config, recipes
from distgen.data import eval_batches, load_info, split_urls
from distgen.errors import ConfigError
from distgen.evaluation.fidelity import KEYS, evaluate_generator
from distgen.evaluation.inception import to_uint8
from distgen.evaluation.random_weights import make_random_weights
from distgen.families import FAMILIES

N = 20  # generated images; the tiny shards' test split also has 20 (2 per class)
KID_SUBSET = 10  # below N, so KID's 100 subsets differ and kid_std is a real spread, not rounding noise
METRICS = ("fid", "isc_mean", "isc_std", "kid_mean", "kid_std", "precision", "recall")


def build_shards(out: Path, seed: int = 0, test_fraction: float = 0.01) -> Path:
    from shards.__main__ import main

    assert main(["digits", "--out", str(out), "--test-fraction", str(test_fraction), "--seed", str(seed)]) == 0
    return out


def real_images(root: Path, split: str, n: int) -> torch.Tensor:
    """n images of a split, [-1, 1] float."""
    info = load_info(config.DataConfig(root=str(root)))
    return next(eval_batches(split_urls(info, split, split), n, info))["image"]


@pytest.fixture(scope="module")
def tiny(digits_small_test) -> Path:
    """Real digits shards whose test split is tiny: 20 images, the FID reference."""
    return digits_small_test


@pytest.fixture(scope="module")
def weights(tiny, tmp_path_factory) -> Path:
    calibration = torch.cat([to_uint8(real_images(tiny, "train", 4)).expand(-1, 3, -1, -1),
                             torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)])
    return make_random_weights(tmp_path_factory.mktemp("weights") / "inception-random.pth", images=calibration)


@pytest.fixture(scope="module")
def gan_run(tiny, tmp_path_factory) -> Path:
    """A 20-step DCGAN run, and next to it ("other") a 10-step one with two other settings, trained
    back to back so both are written by the same code (for compare.py's config differences)."""
    runs = tmp_path_factory.mktemp("runs")
    for name, extra in (("dcgan", ["train.steps=20"]), ("other", ["train.steps=10", "optim.lr_d=1e-4", "run.seed=1"])):
        train("dcgan_digits_smoke", *TINY_GAN, f"data.root={tiny}", f"run.dir={runs / name}",
              "run.checkpoint_every=20", *extra)
    return runs / "dcgan"


def torch_fidelity_metrics(samples: Path, reference: Path, weights: Path) -> dict:
    """torch-fidelity's own calculate_metrics on image folders, as a user would re-check a number."""
    with threadpool_limits(limits=1, user_api="blas"):  # speed only: FID's eig, as evaluate_generator does
        out = torch_fidelity.calculate_metrics(
            input1=str(samples), input2=str(reference), cuda=False, isc=True, fid=True, kid=True, prc=True,
            feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(weights),
            kid_subset_size=KID_SUBSET, cache=False, verbose=False,
            save_cpu_ram=True)  # no 4 DataLoader processes: 3x faster on 2 cores; same features and metrics
    return {KEYS[k]: v for k, v in out.items() if k in KEYS}


def assert_equal_metrics(ours: dict, theirs: dict) -> None:
    for key in METRICS:
        a, b = ours[key], theirs[key]
        assert abs(a - b) <= 1e-4 * abs(b) + 1e-12, f"{key}: ours {a!r}, torch-fidelity {b!r}"


def assert_not_degenerate(result: dict) -> None:
    assert result["fid"] > 1.0 and result["kid_mean"] != 0 and result["kid_std"] > 0, result  # KID may be < 0
    assert result["isc_mean"] > 1.0 + 1e-4 and result["isc_std"] > 0, result


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


class RealDigits(nn.Module):
    """A "generator" that returns real training digits picked by the noise, so generated and real
    sets overlap: precision and recall land strictly between 0 and 1, unlike a 20-step GAN's."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.register_buffer("images", images)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.images[(z.flatten(1)[:, 0].abs() * 1e4).long() % len(self.images)]


def tiny_family(root: Path):
    """(config, untrained tiny DCGAN family) on a shard folder, for in-process evaluations."""
    cfg = recipes.load(ROOT / "recipes" / "dcgan_digits_smoke.yaml",
                       [f"data.root={root}", "model.z_dim=16", "model.width=8"])
    return cfg, FAMILIES["dcgan"](cfg, load_info(cfg.data))


def test_one_process_equals_torch_fidelity_on_the_scored_images(tiny, weights, tmp_path):
    cfg, family = tiny_family(tiny)
    family.nets["G"] = RealDigits(real_images(tiny, "train", 40))
    samples, reference = tmp_path / "samples", tmp_path / "reference"
    ours = evaluate_generator(family, cfg, ["fid", "isc", "kid", "prc"], N, weights, kid_subset_size=KID_SUBSET,
                              save_samples=samples, save_reference=reference)
    assert ours["num_samples"] == N and ours["num_reference"] == 20 and ours["kid_subset_size"] == KID_SUBSET
    assert len(digests(samples)) == N and len(digests(reference)) == 20
    assert Image.open(samples / "00000000.png").mode == "L"  # grey files: torch-fidelity makes them RGB
    assert_not_degenerate(ours)
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1, ours
    assert_equal_metrics(ours, torch_fidelity_metrics(samples, reference, weights))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def evaluate(run_dir: Path, *args: str, processes: int = 1, env: dict | None = None):
    if processes == 1:  # in this process; its env variables are read at run time
        return script("evaluate", str(run_dir), *args, env=env)
    launcher = [str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(free_port())]
    env = {"ACCELERATE_USE_CPU": "1", **(env or {})}
    return run(launcher + ["launch/evaluate.py", str(run_dir), *args], env)


def last_json(result) -> dict:
    assert result.returncode == 0, f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_processes(gan_run, weights, tmp_path_factory):
    """A real 2-process evaluation of the trained run, writing the scored images."""
    tmp = tmp_path_factory.mktemp("eval2")
    result = evaluate(gan_run, "--metrics", "fid,isc,kid,prc", "--num-samples", str(N), "--kid-subset-size",
                      str(KID_SUBSET), "--inception-weights", str(weights), "--cache-dir", str(tmp / "cache"),
                      "--save-samples", str(tmp / "samples"), "--save-reference", str(tmp / "reference"),
                      processes=2)
    return last_json(result), tmp


def test_two_processes_equal_torch_fidelity_on_the_scored_images(two_processes, weights):
    ours, tmp = two_processes
    assert len(digests(tmp / "samples")) == N and len(digests(tmp / "reference")) == 20
    assert_not_degenerate(ours)
    assert_equal_metrics(ours, torch_fidelity_metrics(tmp / "samples", tmp / "reference", weights))


def test_one_process_scores_the_same_images_and_reuses_the_cache(two_processes, gan_run, weights, tmp_path):
    two, tmp = two_processes
    # no fid here: its 2048x2048 eigendecomposition costs seconds, and the tests above cover it
    result = evaluate(gan_run, "--metrics", "isc,kid,prc", "--num-samples", str(N),
                      "--kid-subset-size", str(KID_SUBSET), "--cache-dir",
                      str(tmp / "cache"), "--save-samples", str(tmp_path / "samples"),
                      env={"DISTGEN_INCEPTION_WEIGHTS": str(weights)})  # the variable instead of the flag
    one = last_json(result)
    assert "reference features: cached in" in result.stderr
    # the same generated images, byte for byte, whatever the number of processes ...
    assert digests(tmp_path / "samples") == digests(tmp / "samples")
    # ... so torch-fidelity's numbers on them are the ones the 2-process test checked against
    for key in ("isc_mean", "isc_std", "kid_mean", "kid_std", "precision", "recall"):
        assert abs(one[key] - two[key]) <= 1e-4 * abs(two[key]) + 1e-12, key
    written = json.loads((gan_run / "eval" / "step_20.json").read_text())
    assert written["kid_mean"] == one["kid_mean"] and written["fid"] == two["fid"]  # merged into one file


def test_changed_data_is_never_scored_with_stale_reference_features(weights, tmp_path):
    data = build_shards(tmp_path / "data", seed=0, test_fraction=0.005)  # 10 test digits, 1 per class
    cfg, family = tiny_family(data)
    cache, said = tmp_path / "cache", []

    def kid() -> float:
        return evaluate_generator(family, cfg, ["kid"], 2, weights, cache_dir=cache, log=said.append)["kid_mean"]

    first, again = kid(), kid()
    assert said[0].startswith("reference features: computed") and said[1].startswith("reference features: cached")
    assert again == first and len(list(cache.glob("reference-*.pt"))) == 1

    index = (data / "index.json").read_bytes()
    shutil.rmtree(data)
    build_shards(data, seed=1, test_fraction=0.005)  # other test digits, same shard names and counts ...
    (data / "index.json").write_bytes(index)  # ... even under a byte-identical index.json
    changed = kid()
    assert said[2].startswith("reference features: computed"), said
    assert changed != first and len(list(cache.glob("reference-*.pt"))) == 2


def test_no_weights_fails_at_once_with_how_to_provide_them(gan_run, tmp_path):
    result = evaluate(gan_run, "--metrics", "fid", env={"DISTGEN_INCEPTION_WEIGHTS": "", "TORCH_HOME": str(tmp_path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "--inception-weights" in lines[0] and "DISTGEN_INCEPTION_WEIGHTS" in lines[0]
    assert not any(tmp_path.iterdir())  # nothing downloaded into the torch hub folder
    cfg, family = tiny_family(Path(yaml.safe_load((gan_run / "config.yaml").read_text())["data"]["root"]))
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate_generator(family, cfg, ["isc"], N, tmp_path / "nope.pth")


# ----------------------------------------------------------------------------- report and compare


def md_images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


def test_report_of_a_smoke_run_has_every_figure(gan_run, two_processes):
    result = script("report", str(gan_run))
    assert result.returncode == 0, result.stderr
    report = gan_run / "report"
    md, page = (report / "index.md").read_text(), (report / "index.html").read_text()
    images = md_images(md)
    # dcgan logs D/real, D/fake, G/adv, D(x), D(G(z)), img/s; it wrote grids at 10, 20; evaluate.py a grid
    for figure in ("curves_losses.png", "curves_d_outputs.png", "curves_speed.png", "curves_eval.png"):
        assert figure in images, figure
    for link in images:
        assert (report / link).read_bytes()[:3] in (b"\x89PN", b"\xff\xd8\xff"), link  # PNG, or a JPEG thumbnail
    thumbs = re.findall(r"\[!\[[^\]]*\]\((thumbs/[^)]+)\)\]\(([^)]+)\)", md)  # thumbnails linked to full size
    assert [full for _, full in thumbs] == ["../samples/step_10.png", "../samples/step_20.png",
                                            "../eval/grid_step_20.png"]
    assert all(thumb in images for thumb, _ in thumbs)
    assert "curves_accuracy.png" not in images  # dcgan logs no accuracy: no empty figure
    table = next(line for line in md.splitlines() if line.startswith("| step |"))
    assert "| fid |" in table and "| isc_mean |" in table and any(line.startswith("| 20 |") for line in md.splitlines())
    assert page.count("<img ") == len(images) and 'src="data:image/png;base64,' in page  # one portable file
    assert "**command**: `train.py" in md and "**mixed precision**: no" in md  # run.json's facts


def compare_table(stdout: str, title: str) -> dict[str, list[str]]:
    """First column -> other cells of the Markdown table under `## title`."""
    section = stdout.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def compare_main(argv: list[str]) -> int:
    """launch/compare.py's main() in this process (capsys sees its output)."""
    return launch_module("launch/compare.py").main(argv)


def test_compare_lists_exactly_the_config_keys_that_differ(gan_run, tmp_path, capsys):
    other = gan_run.parent / "other"
    code = compare_main([str(gan_run), str(other), "--csv", str(tmp_path / "c.csv"),
                         "--plot", str(tmp_path / "curves.png")])
    out = capsys.readouterr().out
    assert code == 0, out
    differ = compare_table(out, "Config keys that differ")
    assert set(differ) == {"optim.lr_d", "run.seed", "train.steps"}  # run.dir is the column name, not a row
    assert differ["optim.lr_d"] == ["0.0002", "0.0001"] and differ["train.steps"] == ["20", "10"]
    final = compare_table(out, "Final metrics")
    assert {"D/real", "D/fake", "G/adv", "D(x)", "D(G(z))"} <= set(final)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "c.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 3 and header[0] == "run" and set(header[1:4]) == {f"config.{k}" for k in differ}


# What wandb.Api().runs("lab/distgen") gave for two quickstart runs (config, summary, history), trimmed.
RECORDED_WANDB = [
    {"id": "3k2v9x1a", "name": "quickstart-lr2e-4",
     "config": {"family": "acgan", "optim": {"lr_d": 0.0002, "lr_g": 0.0002}, "train": {"steps": 100},
                "run": {"dir": "runs/quickstart/a", "seed": 0}, "_wandb": {"python_version": "3.11.9"}},
     "summary": {"D/real": 0.41, "G/adv": 1.92, "eval/acc": 0.93, "_step": 100, "_runtime": 81.5},
     "history": [{"_step": 50, "D/real": 0.63, "G/adv": 1.41, "_runtime": 40.2},
                 {"_step": 100, "D/real": 0.41, "G/adv": 1.92, "_runtime": 80.9},
                 {"_step": 100, "eval/acc": 0.93, "_runtime": 81.5}]},
    {"id": "7q1m4c8d", "name": "quickstart-lr1e-4",
     "config": {"family": "acgan", "optim": {"lr_d": 0.0001, "lr_g": 0.0002}, "train": {"steps": 100},
                "run": {"dir": "runs/quickstart/b", "seed": 0}, "_wandb": {"python_version": "3.11.9"}},
     "summary": {"D/real": 0.52, "G/adv": 1.63, "eval/acc": 0.88, "_step": 100, "_runtime": 79.0},
     "history": [{"_step": 50, "D/real": 0.71, "G/adv": 1.22, "_runtime": 39.8},
                 {"_step": 100, "D/real": 0.52, "G/adv": 1.63, "_runtime": 78.4},
                 {"_step": 100, "eval/acc": 0.88, "_runtime": 79.0}]},
]


class RecordedRun:
    def __init__(self, record: dict):
        self.id, self.name, self.config = record["id"], record["name"], record["config"]
        self.summary_metrics, self._history = record["summary"], record["history"]

    def scan_history(self):
        return iter(self._history)


class RecordedApi:
    def __init__(self):
        self.calls = []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return [RecordedRun(r) for r in RECORDED_WANDB]


def test_compare_reads_wandb_runs_through_the_public_api(monkeypatch, tmp_path, capsys):
    import wandb

    api = RecordedApi()
    monkeypatch.setattr(wandb, "Api", lambda *args, **kwargs: api)  # never the network
    code = compare_main(["--wandb", "lab/distgen", "--filter", '{"config.family": "acgan"}',
                         "--plot", str(tmp_path / "curves.png"), "--csv", str(tmp_path / "c.csv")])
    out = capsys.readouterr().out
    assert code == 0 and api.calls == [("lab/distgen", {"config.family": "acgan"})]
    assert compare_table(out, "Config keys that differ") == {"optim.lr_d": ["0.0002", "0.0001"]}
    final = compare_table(out, "Final metrics")
    assert final["eval/acc"] == ["0.93", "0.88"] and final["G/adv"] == ["1.92", "1.63"] and "_step" not in final
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "c.csv").read_text().splitlines()[1].startswith("quickstart-lr2e-4,0.0002,")


# A sweep's runs as wandb.Api().runs gives them: 2 learning rates x 3 (and 2) seeds in W&B group "lr",
# each recording (log.wandb.group_by/group_metrics, set by launch/sweep.py) what its table groups by,
# and one run of another group in the same project. (lr_d, seed) -> (eval/fid, G/adv). eval/rmse_AB stands
# for a metric of the study's table that its `after` evaluation wrote to the run dirs only, not to W&B.
SWEEP_FINAL = {(1e-4, 0): (10.0, 1.0), (1e-4, 1): (12.0, 1.5), (1e-4, 2): (14.0, 2.0),
               (3e-4, 0): (20.0, 0.5), (3e-4, 1): (21.0, 0.75)}


def sweep_record(group: str, lr: float, seed: int, fid: float, adv: float, recorded: bool = True) -> dict:
    wandb_cfg = {"enabled": True, "project": "distgen", "group": group, "tags": [],
                 **({"group_by": ["optim.lr_d"], "group_metrics": ["eval/fid", "eval/rmse_AB"]} if recorded else {})}
    return {"id": f"{group}{lr:g}{seed}", "name": f"lr_d={lr:g},seed={seed}", "group": group,
            "config": {"family": "dcgan", "optim": {"lr_d": lr, "lr_g": 2e-4}, "train": {"steps": 40},
                       "run": {"dir": f"runs/sweeps/{group}/lr_d={lr:g},seed={seed}", "seed": seed},
                       "log": {"every": 20, "wandb": wandb_cfg}, "_wandb": {"python_version": "3.11.9"}},
            "summary": {"G/adv": adv, "eval/fid": fid, "_step": 40, "_runtime": 30.0},
            "history": [{"_step": 20, "G/adv": adv * 2, "_runtime": 15.0},
                        {"_step": 40, "G/adv": adv, "_runtime": 29.0},
                        {"_step": 40, "eval/fid": fid, "_runtime": 30.0}]}


class GroupApi(RecordedApi):
    """Answers as the W&B server would: only the runs that match `filters` ({"group": ...}, config.<key>
    equality, "$and"), so a test sees whether the group reached the query."""

    def __init__(self, records: list[dict]):
        super().__init__()
        self.records = records

    @staticmethod
    def matches(record: dict, filters: dict | None) -> bool:
        for key, want in (filters or {}).items():
            if key == "$and":
                if not all(GroupApi.matches(record, f) for f in want):
                    return False
            elif key == "group":
                if record["group"] != want:
                    return False
            else:
                value = record["config"]
                for part in key.removeprefix("config.").split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if value != want:
                    return False
        return True

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        return [RecordedRun(r) for r in self.records if self.matches(r, filters)]


def wandb_sweep(recorded: bool = True) -> GroupApi:
    records = [sweep_record("lr", lr, seed, fid, adv, recorded) for (lr, seed), (fid, adv) in SWEEP_FINAL.items()]
    return GroupApi(records + [sweep_record("other", 1e-4, 0, 99.0, 9.0)])


def test_compare_groups_a_wandb_group_as_its_sweep_recorded(monkeypatch, tmp_path, capsys):
    """--wandb --group: the group goes to the API's filter; without --group-by the table groups by the
    keys the runs recorded, mean ± std over seeds with n, only the recorded metrics; curves with bands."""
    import wandb

    api = wandb_sweep()
    monkeypatch.setattr(wandb, "Api", lambda *args, **kwargs: api)  # never the network
    code = compare_main(["--wandb", "lab/distgen", "--group", "lr", "--filter",
                         '{"config.family": "dcgan"}', "--plot", str(tmp_path / "bands.png"),
                         "--csv", str(tmp_path / "groups.csv")])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert api.calls == [("lab/distgen", {"config.family": "dcgan", "group": "lr"})]
    assert "eval/rmse_AB" in err and "runs/sweeps/lr" in err  # a recorded metric W&B lacks: said, left out
    table = compare_table(out, "Final metrics by optim.lr_d")
    assert table == {"0.0001": ["3", "12 ± 2"], "0.0003": ["2", "20.5 ± 0.71"]}  # the other group's run is not in
    with open(tmp_path / "groups.csv") as f:
        rows = list(csv.DictReader(f))
    for row, lr in zip(rows, (1e-4, 3e-4)):
        fids = [fid for (l, _), (fid, _) in SWEEP_FINAL.items() if l == lr]
        assert float(row["config.optim.lr_d"]) == lr and int(row["n"]) == int(row["eval/fid_n"]) == len(fids)
        assert float(row["eval/fid_mean"]) == pytest.approx(statistics.fmean(fids))
        assert float(row["eval/fid_std"]) == pytest.approx(statistics.stdev(fids))
        assert "G/adv_mean" not in row  # the recorded table's metrics only
    assert (tmp_path / "bands.png").read_bytes()[:4] == b"\x89PNG"

    code = compare_main(["--wandb", "lab/distgen", "--group", "lr", "--group-by", "run.seed",
                         "--metrics", "G/adv", "--plot", str(tmp_path / "b2.png")])
    table = compare_table(capsys.readouterr().out, "Final metrics by run.seed")
    assert code == 0 and table["0"] == ["2", "0.75 ± 0.35"] and table["2"] == ["1", "2"]  # --group-by wins
    assert api.calls[-1] == ("lab/distgen", {"group": "lr"})


def test_compare_wandb_group_errors_name_the_group_and_the_fix(monkeypatch, tmp_path, capsys):
    import wandb

    api = wandb_sweep(recorded=False)
    monkeypatch.setattr(wandb, "Api", lambda *args, **kwargs: api)
    compare = launch_module("launch/compare.py")
    assert compare.main(["--wandb", "lab/distgen", "--group", "lr-typo"]) == 2
    err = capsys.readouterr().err
    assert "W&B group 'lr-typo' has no runs" in err and api.calls[-1] == ("lab/distgen", {"group": "lr-typo"})
    assert compare.main(["--wandb", "lab/distgen", "--group", "lr"]) == 2  # nothing recorded: say what to pass
    err = capsys.readouterr().err
    assert "W&B group 'lr'" in err and "--group-by optim.lr_d" in err and "run.seed" not in err.split("e.g.")[1]
    assert compare.main(["--wandb", "lab/distgen", "--group", "lr", "--group-by", "optim.lr_d",
                         "--plot", str(tmp_path / "b.png")]) == 0
    row = compare_table(capsys.readouterr().out, "Final metrics by optim.lr_d")["0.0003"]
    assert row[0] == "2" and {"0.625 ± 0.18", "20.5 ± 0.71"} <= set(row)  # every metric logged: G/adv, eval/fid
    assert compare.main(["runs/x", "--group", "lr"]) == 2 and "add --wandb" in capsys.readouterr().err
