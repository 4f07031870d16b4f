"""VAE and DANN through the real entry point: measurements, figures, exact resume, every test sample
counted once on two processes, target labels never read in training, the table."""
from __future__ import annotations

import io
import json
import math
import sys
import tarfile

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from checkpoint_state import assert_resumed_from, assert_same_checkpoint
from conftest import ROOT, metrics, run, train, script
from distgen import config, recipes
from distgen.checkpoint import load_run
from distgen.data import DataInfo
from distgen.errors import ConfigError
from distgen.families import FAMILIES
from distgen.families.dann import grl_lambda, reverse_gradient
from distgen.loops.single import eval_sums, streams
from distgen.tables import dann_table

# Tiny nets and batches: every run here takes seconds on 2 CPU cores.
TINY_VAE = ["model.latent=8", "model.widths=[8, 16]", "train.batch_size=32", "log.every=5", "model.tsne_points=60"]
TINY_DANN = ["model.widths=[8, 16]", "model.hidden=16", "train.batch_size=32", "log.every=5", "model.tsne_points=40"]
FACES = DataInfo(64, 3, (), ("Male", "Smiling"), {}, {})
# Tiny nets gain nothing from a second thread, and on a busy 2-core machine OpenMP threads waiting
# for each other made these runs up to 6x slower (measured).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dann_data(digits, digits_m):
    return [f"data.source={digits}", f"data.target={digits_m}"]


def split_count(root, split="test") -> int:
    return json.loads((root / "index.json").read_text())["splits"][split]["count"]


def _weights(ckpt):
    meta = json.loads((ckpt / "meta.json").read_text())
    return {f"{net}.{k}": v for net, f in meta["family_nets"].items() for k, v in load_file(str(ckpt / f)).items()}


def _evals(run_dir):
    return {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in (run_dir / "eval").glob("step_*.json")}


# ----------------------------------------------------------------------------- nets and pieces


def test_vae_nets_are_the_reports_at_64px():
    fam = FAMILIES["vae"](recipes.from_dict({"family": "vae"}), FACES)
    enc, dec = fam.nets["encoder"], fam.nets["decoder"]
    convs = [(m.in_channels, m.out_channels) for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(3, 32), (32, 32), (32, 64), (64, 128)]
    assert (enc.mean.in_features, enc.mean.out_features) == (2048, 512) == (enc.logvar.in_features, 512)
    assert (dec.fc.in_features, dec.fc.out_features) == (512, 2048)
    deconvs = [(m.in_channels, m.out_channels) for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert deconvs == [(128, 64), (64, 32), (32, 32), (32, 3)]
    mean, logvar = enc(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert mean.shape == logvar.shape == (2, 512)
    out = dec(mean)
    assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1


def test_vae_loss_terms_are_mse_and_weighted_kld():
    cfg = recipes.from_dict({"family": "vae", "model": {"latent": 4, "widths": [4, 8], "kl_weight": 0.5,
                                                        "kl_warmup": 0.5}})
    fam = FAMILIES["vae"](cfg, DataInfo(32, 1, tuple("0123456789"), (), {}, {}))
    batch = {"image": torch.rand(4, 1, 32, 32) * 2 - 1}
    torch.manual_seed(0)
    fam.progress = 0.25  # half way through the warm-up: lambda = 0.25
    quarter = fam.loss(batch, fam.nets)
    torch.manual_seed(0)
    fam.progress = 0.9
    full = fam.loss(batch, fam.nets)
    assert set(full) == {"mse", "kld"} and all(t.ndim == 0 and torch.isfinite(t) for t in full.values())
    assert quarter["kld"].item() == pytest.approx(full["kld"].item() / 2, rel=1e-5)
    assert 0 < full["mse"].item() < 1  # per pixel on the 0..1 scale


def test_unknown_tsne_attribute_is_a_config_error():
    cfg = recipes.from_dict({"family": "vae", "model": {"tsne_attr": "Bald"}})
    with pytest.raises(ConfigError, match="Bald.*Male, Smiling"):
        FAMILIES["vae"](cfg, FACES)


def test_gradient_reversal_and_its_schedule():
    x = torch.ones(3, requires_grad=True)
    (reverse_gradient(x, 0.3) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.3, -0.6, -0.9]))
    assert grl_lambda(0.0) == 0.0
    assert grl_lambda(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert grl_lambda(1.0) == pytest.approx(0.99991, abs=1e-5)
    fam = FAMILIES["dann"](recipes.from_dict({"family": "dann"}), DataInfo(32, 1, tuple("0123456789"), (), {}, {}))
    assert fam.lr_factor(0.0) == 1.0 and fam.lr_factor(1.0) == pytest.approx(11 ** -0.75)


def test_dann_modes_pick_their_streams_and_nets(digits, digits_m):
    base = {"family": "dann", "data": {"source": str(digits), "target": str(digits_m)}}
    info = DataInfo(32, 1, tuple("0123456789"), (), {}, {})
    expect = {"source_only": (["source"], {"features", "classifier"}),
              "dann": (["source", "target"], {"features", "classifier", "domain"}),
              "target_only": (["target"], {"features", "classifier"})}
    for mode, (names, nets) in expect.items():
        cfg = recipes.from_dict({**base, "model": {"mode": mode}})
        assert list(streams(FAMILIES["dann"], cfg, "train")) == names
        assert list(streams(FAMILIES["dann"], cfg, "eval")) == ["source", "target"]
        assert set(FAMILIES["dann"](cfg, info).nets) == nets
    no_target = recipes.from_dict({"family": "dann", "data": {"root": str(digits)}})
    with pytest.raises(ConfigError, match="data.target"):
        streams(FAMILIES["dann"], no_target, "train")
    clash = recipes.from_dict({**base, "data": {**base["data"], "root": str(digits_m)}})
    with pytest.raises(ConfigError, match="data.root.*data.source"):
        streams(FAMILIES["dann"], clash, "train")


# ----------------------------------------------------------------------------- runs


def test_vae_smoke_run_measures_the_whole_test_split_and_draws(digits, tmp_path):
    run_dir = tmp_path / "vae"
    train("vae_digits_smoke", *TINY_VAE, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=30",
          "eval.every=10", "log.sample_every=30", "optim.lr=3e-3", env=ONE_THREAD)
    evals = _evals(run_dir)
    assert sorted(evals) == [10, 20, 30]
    for result in evals.values():
        assert result["num_test"] == split_count(digits)
        assert 0 < result["mse"] < 1 and result["kld"] >= 0
    assert evals[30]["mse"] < evals[10]["mse"]  # the reconstruction learning curve goes down
    recon = Image.open(run_dir / "eval" / "recon_step_30.png")
    assert recon.size == (10 * 34 + 2, 2 * 34 + 2)  # 10 test images over their reconstructions
    assert Image.open(run_dir / "samples" / "step_30.png").size == (8 * 34 + 2, 4 * 34 + 2)  # 32 prior samples
    assert Image.open(run_dir / "eval" / "tsne_step_30.png").size[0] > 200
    rows = metrics(run_dir)
    assert all(math.isfinite(r["mse"]) and math.isfinite(r["kld"]) for r in rows if "mse" in r)
    # evaluate.py measures the checkpoint the way the loop did
    result = run([sys.executable, "launch/evaluate.py", str(run_dir), "--metrics", "test"], env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["num_test"] == evals[30]["num_test"]
    assert printed["mse"] == pytest.approx(evals[30]["mse"], rel=1e-4)
    assert printed["kld"] == pytest.approx(evals[30]["kld"], rel=1e-4)


@pytest.mark.parametrize("family", ["vae", "dann"])
def test_resume_is_exact(digits, dann_data, tmp_path, family):
    """20 steps straight = 10 steps, then a new run resumed from that checkpoint for 10 more (same
    train.steps, so the GRL and learning-rate schedules have the same horizon)."""
    recipe, tiny = {"vae": ("vae_digits_smoke", TINY_VAE + [f"data.root={digits}"]),
                    "dann": ("dann_digits", TINY_DANN + dann_data + ["model.batch_norm=true"])}[family]
    common = [*tiny, "train.steps=20", "run.checkpoint_every=10", "run.keep_last=0", "eval.every=10",
              "log.sample_every=1000"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(recipe, *common, f"run.dir={straight}", env=ONE_THREAD)
    second = train(recipe, *common, f"run.dir={resumed}", resume=str(straight / "checkpoints" / "step_10"),
                   env=ONE_THREAD)
    assert_resumed_from(resumed, straight / "checkpoints" / "step_10", second.stdout + second.stderr)
    assert_same_checkpoint(straight / "checkpoints" / "step_20", resumed / "checkpoints" / "step_20",
                           expect=("optimizer.bin", "random_states_0.pkl"))
    a = _weights(straight / "checkpoints" / "step_20")
    first = _weights(straight / "checkpoints" / "step_10")
    assert any(not torch.equal(first[k], a[k]) for k in a)  # the weights did move: equality is not vacuous
    assert _evals(straight)[20] == _evals(resumed)[20]
    after = [{k: v for k, v in r.items() if k != "img/s"} for r in metrics(straight) if r["step"] > 10]
    assert after == [{k: v for k, v in r.items() if k != "img/s"} for r in metrics(resumed)]
    if family == "dann":  # losses, GRL lambda and learning rate of steps 15 and 20 were logged alike
        assert {"lr", "grl_lambda", "domain"} <= set(after[0])


def test_two_processes_count_every_test_sample_once(digits, digits_m, dann_data, tmp_path):
    """Each rank evaluates its share of both test splits with rank 0's BatchNorm statistics: the sums
    over ranks equal one process walking the whole splits with the checkpoint's weights."""
    run_dir = tmp_path / "dann2"
    train("dann_digits", *TINY_DANN, *dann_data, "model.batch_norm=true", f"run.dir={run_dir}", "train.steps=6",
          "eval.every=6", "run.checkpoint_every=6", launcher="accelerate2", env=ONE_THREAD)
    result = _evals(run_dir)[6]
    assert result["source_count"] == split_count(digits) and result["target_count"] == split_count(digits_m)
    assert json.loads((run_dir / "ranks.json").read_text())["in_sync"]

    cfg, family, step = load_run(run_dir)
    assert step == 6
    models = {name: net.eval() for name, net in family.nets.items()}
    evals = streams(type(family), cfg, "eval")
    halves = [eval_sums(family, models, evals, cfg, rank, 2) for rank in (0, 1)]  # each rank's share, here
    both = family.finish_eval({k: (halves[0][k] + halves[1][k]).item() for k in halves[0]})
    for key, value in both.items():  # rank 1 used rank 0's BatchNorm statistics: the checkpoint's model
        assert result[key] == pytest.approx(value, abs=1e-6), key
    alone = family.finish_eval({k: v.item() for k, v in eval_sums(family, models, evals, cfg).items()})
    for key, value in alone.items():  # one process walking the whole splits (other batches: float noise)
        assert result[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert abs(halves[0]["target/count"] - halves[1]["target/count"]) <= 1


def _relabel(src, dst):
    """A copy of a shard folder with every label moved to the next class (images untouched)."""
    dst.mkdir()
    (dst / "index.json").write_text((src / "index.json").read_text())
    for shard in src.glob("*.tar"):
        with tarfile.open(shard) as old, tarfile.open(dst / shard.name, "w") as new:
            for member in old.getmembers():
                data = old.extractfile(member).read()
                if member.name.endswith(".cls"):
                    data = str((int(data) + 1) % 10).encode()
                    member.size = len(data)
                new.addfile(member, io.BytesIO(data))


def test_target_labels_are_never_read_in_dann_training(digits, digits_m, tmp_path):
    wrong = tmp_path / "digits-m-wrong-labels"
    _relabel(digits_m, wrong)
    runs = {}
    for name, target in (("true", digits_m), ("wrong", wrong)):
        runs[name] = tmp_path / name
        train("dann_digits", *TINY_DANN, f"data.source={digits}", f"data.target={target}", f"run.dir={runs[name]}",
              "train.steps=10", "run.checkpoint_every=10", env=ONE_THREAD)
    a, b = _weights(runs["true"] / "checkpoints" / "step_10"), _weights(runs["wrong"] / "checkpoints" / "step_10")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert _evals(runs["true"])[10]["source_acc"] == _evals(runs["wrong"])[10]["source_acc"]
    with tarfile.open(digits_m / "train-000000.tar") as a, tarfile.open(wrong / "train-000000.tar") as b:
        first = next(m.name for m in a.getmembers() if m.name.endswith(".cls"))
        assert a.extractfile(first).read() != b.extractfile(first).read()  # the labels really differ
    assert (runs["true"] / "eval" / "tsne_class_step_10.png").is_file()
    assert (runs["true"] / "eval" / "tsne_domain_step_10.png").is_file()


# ----------------------------------------------------------------------------- the table


def _fake_run(path, mode, target_acc, source="data/digits", target="data/digits-m"):
    (path / "eval").mkdir(parents=True)
    cfg = recipes.from_dict({"family": "dann", "model": {"mode": mode}, "data": {"source": source, "target": target}})
    (path / "config.yaml").write_text(config.dump(cfg))
    (path / "eval" / "step_100.json").write_text(json.dumps({"step": 100, "target_acc": 0.0, "source_acc": 0.9}))
    (path / "eval" / "step_200.json").write_text(json.dumps({"step": 200, "target_acc": target_acc}))
    return path


def test_dann_table_rows_modes_columns_scenarios(tmp_path):
    dirs = [_fake_run(tmp_path / "a", "source_only", 0.40), _fake_run(tmp_path / "b", "dann", 0.55),
            _fake_run(tmp_path / "c", "target_only", 0.95), _fake_run(tmp_path / "d", "dann", 0.65),
            _fake_run(tmp_path / "e", "dann", 0.785, "data/mnistm", "data/usps")]
    table = dann_table(dirs).splitlines()
    assert table[0] == "| target accuracy (%) | digits → digits-m | mnistm → usps |"
    assert table[2] == "| source-only | 40.0 | – |"
    assert table[3] == "| DANN | 60.0 (+20.0) (mean of 2) | 78.5 |"
    assert table[4] == "| target-only | 95.0 | – |"
    printed = script("dann_table", *map(str, dirs))
    assert printed.returncode == 0 and printed.stdout.strip().splitlines() == table
    not_dann = tmp_path / "vae"
    not_dann.mkdir()
    (not_dann / "config.yaml").write_text(yaml.safe_dump({"family": "vae"}))
    refused = script("dann_table", str(not_dann))
    assert refused.returncode == 2 and "dann runs" in refused.stderr and "Traceback" not in refused.stderr


def test_dann_recipes_parse_with_their_scenarios():
    for name, (source, target) in {"dann_digits": ("digits", "digits-m"), "dann_mnistm_usps": ("mnistm", "usps"),
                                   "dann_svhn_mnistm": ("svhn", "mnistm"), "dann_usps_svhn": ("usps", "svhn")}.items():
        cfg = recipes.load(ROOT / "recipes" / f"{name}.yaml")
        assert cfg.family == "dann" and cfg.model.mode == "dann"
        assert (cfg.data.source.split("/")[-1], cfg.data.target.split("/")[-1]) == (source, target)
