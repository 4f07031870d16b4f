"""What every GAN family gets from the loop: mixed precision, SyncBN policy, accumulation, EMA, per-net optimizers."""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from checkpoint_state import optimizer_steps
from conftest import BIN, ROOT, TINY_GAN, metrics, run, train
from distgen import config, recipes
from distgen.checkpoint import load_run
from distgen.data import DataInfo
from distgen.families import FAMILIES
from distgen.loops.adversarial import convert_sync_bn

DIGITS = DataInfo(32, 1, tuple("0123456789"), (), {}, {})


def _wgan(**model):
    cfg = recipes.from_dict({"family": "wgan_gp", "model": {"z_dim": 8, "width": 8, **model}})
    return FAMILIES["wgan_gp"](cfg, DIGITS)


def test_gradient_penalty_in_bf16_matches_fp32():
    torch.manual_seed(0)
    fam = _wgan()
    D = fam.nets["D"]
    real, fake = torch.rand(8, 1, 32, 32) * 2 - 1, torch.rand(8, 1, 32, 32) * 2 - 1
    torch.manual_seed(1)
    fp32 = fam.gradient_penalty(D, real, fake)
    torch.manual_seed(1)  # same interpolation weights
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = fam.gradient_penalty(D, real, fake)
    assert bf16.dtype == torch.float32 and fp32.item() > 1e-3
    assert bf16.item() == pytest.approx(fp32.item(), rel=0.05)


@pytest.mark.parametrize("precision, steps", [("bf16", 5), ("fp16", 3)])
def test_mixed_precision_runs_through_accelerate_launch(digits, tmp_path, precision, steps):
    run_dir = tmp_path / precision
    probe = tmp_path / "dtypes.json"  # tests/precision_probe.py: launch/train.py with a forward hook
    result = run([str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                  "--mixed_precision", precision, "--dynamo_backend", "no", "tests/precision_probe.py", str(probe),
                  str(ROOT / "recipes/wgan_gp_digits_smoke.yaml"), *TINY_GAN, f"data.root={digits}",
                  f"run.dir={run_dir}", f"train.steps={steps}", f"log.every={steps}",
                  "train.phases=[{name: D, repeat: 2}, {name: G}]"])
    assert result.returncode == 0, result.stderr[-3000:]
    row = metrics(run_dir)[-1]
    assert row["step"] == steps and all(v == v and abs(v) < 1e6 for v in row.values())
    # recorded as the run's precision, and the dtype the training convolutions really computed in: bf16 autocast
    # on the CPU; fp16 is fp32 there (Accelerate enables fp16 autocast and its GradScaler on GPUs only), so
    # this run checks the fp16 code path's plumbing, not fp16 numerics (launch/gpu_check.py does, on CUDA)
    assert json.loads((run_dir / "run.json").read_text())["mixed_precision"] == precision
    dtype = {"bf16": "bfloat16", "fp16": "float32"}[precision]
    assert json.loads(probe.read_text())["conv_output_dtypes"] == [dtype]
    # (Accelerate uses no GradScaler on the CPU, so loss scaling itself is covered by tests/test_stepper.py's
    # test_gradient_penalty_through_a_real_grad_scaler_at_a_large_scale; on CUDA the loop logs D/skipped, G/skipped.)


def test_sync_batchnorm_on_any_device_with_several_processes():
    """distgen's SyncBatchNorm (tests/test_sync_batchnorm.py) runs on every backend: CPU included."""
    from distgen.sync_batchnorm import SyncBatchNorm

    def fresh():
        return FAMILIES["dcgan"](recipes.from_dict({"family": "dcgan", "model": {"z_dim": 8, "width": 8}}), DIGITS).nets

    cfg = recipes.from_dict({"family": "dcgan"})
    for device in ("cpu", "cuda"):
        two = SimpleNamespace(device=torch.device(device), num_processes=2)
        converted = convert_sync_bn(fresh(), cfg, two)
        assert any(isinstance(m, SyncBatchNorm) for m in converted["D"].modules())
        assert not any(type(m) is torch.nn.BatchNorm2d for net in converted.values() for m in net.modules())
    nets = fresh()
    assert convert_sync_bn(nets, cfg, SimpleNamespace(device=torch.device("cpu"), num_processes=1)) is nets
    off = recipes.from_dict({"family": "dcgan", "train": {"sync_bn": False}})
    assert convert_sync_bn(nets, off, two) is nets


def test_per_network_optimizers_and_betas():
    cfg = recipes.from_dict({"family": "dcgan", "optim": {"name": "adam", "name_d": "rmsprop", "lr_d": 5e-5,
                                                           "betas_g": [0.0, 0.9]}})
    fam = FAMILIES["dcgan"](cfg, DIGITS)
    opt_g, opt_d = (fam.optimizer(n, fam.nets[n].parameters()) for n in ("G", "D"))
    assert isinstance(opt_g, torch.optim.Adam) and opt_g.defaults["betas"] == (0.0, 0.9)
    assert isinstance(opt_d, torch.optim.RMSprop) and opt_d.defaults["lr"] == 5e-5
    with pytest.raises(config.ConfigError, match="betas_d"):
        recipes.from_dict({"family": "dcgan", "optim": {"betas_d": [0.5]}})


def test_gradient_accumulation_takes_k_micro_batches_per_step(digits, tmp_path):
    run_dir = tmp_path / "accum"
    train("dcgan_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=3",
          "train.grad_accum=2", "train.phases=[{name: D, repeat: 2}, {name: G}]", "log.every=3")
    state = torch.load(run_dir / "checkpoints" / "step_3" / "custom_checkpoint_0.pkl", weights_only=True)
    assert state == {"step": 3, "batches": 3 * 2 * 2}  # steps x D repeats x micro-batches
    # and the optimizers stepped once per k micro-batches: D twice per step (its repeats), G once
    assert optimizer_steps(run_dir / "checkpoints" / "step_3") == {"G": 3, "D": 3 * 2}
    assert metrics(run_dir)[-1]["step"] == 3


def test_ema_weights_are_saved_and_used_for_sampling(digits, tmp_path):
    run_dir = tmp_path / "ema"
    train("dcgan_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=6",
          "train.ema_kimg=0.01")
    _, with_ema, _ = load_run(run_dir, use_ema=True)
    _, raw, _ = load_run(run_dir, use_ema=False)
    ema_state = torch.load(run_dir / "checkpoints" / "step_6" / "custom_checkpoint_1.pkl", weights_only=True)
    first = next(k for k in ema_state if k.startswith("module.") and k.endswith("weight"))
    name = first[len("module."):]
    assert torch.equal(with_ema.nets["G"].state_dict()[name], ema_state[first])
    assert not torch.equal(with_ema.nets["G"].state_dict()[name], raw.nets["G"].state_dict()[name])


@pytest.mark.parametrize("recipe", ["dcgan_digits_smoke", "wgan_gp_digits_smoke"])
def test_speed_switches_train(digits, tmp_path, recipe, monkeypatch):
    """channels_last and torch.compile (the cheap aot_eager backend here; inductor on GPUs) wire into
    the loop; the gradient-penalty critic stays eager."""
    run_dir = tmp_path / "fast"
    import torch._dynamo
    from accelerate import Accelerator

    saved_formats = []
    original_save = Accelerator.save_state

    def save_state(self, *args, **kwargs):  # the nets' 4-d weights as the run holds them at each checkpoint
        saved_formats.extend(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                             for m in self._models for p in m.parameters()
                             if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)  # (layouts that differ)
        return original_save(self, *args, **kwargs)

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    monkeypatch.setattr(Accelerator, "save_state", save_state)
    train(recipe, *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=4", "log.every=4",
          "train.channels_last=true", "train.compile=aot_eager", "train.ema_kimg=0.01")
    monkeypatch.undo()
    assert saved_formats and all(saved_formats)  # train.channels_last: every conv weight is NHWC
    assert torch._dynamo.utils.counters["frames"]["ok"] > 0  # train.compile: dynamo compiled the nets' frames
    torch._dynamo.reset()
    row = metrics(run_dir)[-1]
    assert row["step"] == 4 and all(v == v for v in row.values())
    _, family, step = load_run(run_dir)  # checkpoints hold the plain (uncompiled) modules
    assert step == 4


@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_d_sees_one_layout_of_one_channel_images(digits, channels_last):
    """One-channel images come in two strides: the data stream's batches (NHWC pixels permuted to NCHW)
    have stride 1 on the channel, the generator's output H*W. With train.compile, D's inputs are given
    one layout, so D compiles once instead of recompiling with dynamic shapes (which made inductor
    fail on CUDA: docs/benchmarks.md)."""
    from torch._dynamo.testing import CompileCounter

    from distgen.data import load_info, split_urls, to_device, train_loader

    cfg = recipes.from_dict({"family": "dcgan", "model": {"z_dim": 8, "width": 8}, "data": {"root": str(digits)},
                             "train": {"compile": "aot_eager", "channels_last": channels_last}})
    info = load_info(cfg.data)
    fam = FAMILIES["dcgan"](cfg, info)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G, D = fam.nets["G"], fam.nets["D"].to(memory_format=fmt)
    real = to_device(next(iter(train_loader(split_urls(info, "train", "train"), 4, info, cfg.data, 0, 0, 1))), "cpu")["image"]
    with torch.no_grad():
        fake = G.to(memory_format=fmt)(fam.noise(4))
    assert real.shape == fake.shape and real.stride() != fake.stride()  # .contiguous() would change neither
    seen = [fam.augment(x) for x in (real, fake)]
    assert torch.equal(seen[0], real) and torch.equal(seen[1], fake)
    assert seen[0].stride() == seen[1].stride() == torch.empty(4, 1, 32, 32, memory_format=fmt).stride()
    assert fam.augment(seen[0]) is seen[0]  # no copy when the layout is already the one
    counter = CompileCounter()
    compiled = torch.compile(D, backend=counter)
    for x in seen:
        compiled(x)
    assert counter.frame_count == 1


def test_wandb_without_a_key_logs_offline_into_the_run_dir(digits, tmp_path):
    run_dir = tmp_path / "wb"
    overrides = [*TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=4", "log.every=2",
                 "log.sample_every=2", "log.wandb.enabled=true", "log.wandb.tags=[smoke]"]
    env = {"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path), "NETRC": str(tmp_path / "none")}
    result = train("dcgan_digits_smoke", *overrides, env=env)
    assert "W&B: no API key, logging offline" in result.stdout + result.stderr
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    history = (offline / f"run-{run_id}.wandb").read_bytes()
    assert b"D/real" in history and b"img/s" in history  # the scalars of metrics.jsonl
    assert len(list((offline / "files" / "media" / "images").glob("samples_*.png"))) == 2  # the grids
    train("dcgan_digits_smoke", *overrides[:-4], "train.steps=6", "log.wandb.enabled=true", env=env, resume="auto")
    assert (run_dir / "wandb_id.txt").read_text().strip() == run_id  # a resumed run keeps its W&B id


def test_periodic_fid_during_training_with_summary(digits_small_test, tmp_path):
    """eval.every: FID of generated images against the test split (slices per rank: test_evaluate.py);
    eval/step_<N>.json, eval curves in metrics.jsonl, and the last and best values in summary.json."""
    from distgen.evaluation.random_weights import make_random_weights

    weights = make_random_weights(tmp_path / "inception.pth",
                                  images=torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8))
    run_dir = tmp_path / "fid"
    train("dcgan_digits_smoke", *TINY_GAN, f"data.root={digits_small_test}", f"run.dir={run_dir}", "train.steps=4",
          "eval.every=2", "eval.num_samples=16", "eval.metrics=[fid]", f"eval.inception_weights={weights}",
          env={"DISTGEN_CACHE_DIR": str(tmp_path / "cache")})
    evals = [json.loads((run_dir / "eval" / f"step_{s}.json").read_text()) for s in (2, 4)]
    assert all(e["fid"] > 0 and e["num_samples"] == 16 for e in evals)
    assert [r["step"] for r in metrics(run_dir) if "eval/fid" in r] == [2, 4]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["last"]["fid"]["step"] == 4
    assert summary["best"]["fid"]["value"] == min(e["fid"] for e in evals)


def test_periodic_fid_without_weights_fails_before_training(digits, tmp_path):
    result = run([sys.executable, "launch/train.py", "recipes/dcgan_digits_smoke.yaml", *TINY_GAN,
                  f"data.root={digits}", f"run.dir={tmp_path / 'r'}", "eval.every=2"],
                 env={"DISTGEN_INCEPTION_WEIGHTS": None})
    assert result.returncode == 2 and "InceptionV3 weights" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
