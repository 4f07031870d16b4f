"""Sampling and evaluation invariants (distgen/generation.py) and the generator EMA (distgen/ema.py).

A multi-GPU run with train.sync_bn holds SyncBatchNorm in G; these tests build that on the CPU
(torch.nn.SyncBatchNorm.convert_sync_batchnorm works on CPU modules, and its train-mode forward
takes the collective path whenever a process group is initialised) and show that sampling never
takes it: in one process with an initialised group faked, and in two real gloo processes whose
in-training FID and grid must equal one process's evaluation of the same weights.
"""
from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from checkpoint_state import optimizer_steps
from conftest import BIN, ROOT, TINY_GAN, free_port, run, train
from distgen import config, recipes
from distgen.data import DataInfo, load_info
from distgen.ema import EMA
from distgen.evaluation.fidelity import evaluate_generator
from distgen.evaluation.inception import to_uint8
from distgen.evaluation.random_weights import make_random_weights
from distgen.families import FAMILIES
from distgen.generation import CHUNK, generate, generate_range, save_grid

DIGITS = DataInfo(32, 1, tuple("0123456789"), (), {}, {})


def tiny_dcgan():
    cfg = recipes.from_dict({"family": "dcgan", "model": {"z_dim": 8, "width": 8}})
    return cfg, FAMILIES["dcgan"](cfg, DIGITS)


def syncbn(net: torch.nn.Module) -> torch.nn.Module:
    net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules())
    return net


def test_sampling_a_syncbn_generator_runs_no_collective(monkeypatch):
    """With a process group up, a SyncBatchNorm layer in train mode takes the collective path (on a
    GPU: an all-gather the other ranks never join when only rank 0 draws the grid; on the CPU it
    raises). Sampling must take plain BatchNorm's path, with batch statistics, and leave G alone."""
    torch.manual_seed(0)
    _, family = tiny_dcgan()
    plain = family.nets["G"]
    G = syncbn(FAMILIES["dcgan"](family.cfg, DIGITS).nets["G"])
    G.load_state_dict(plain.state_dict())
    z = family.noise(12, torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = plain.train()(z).clamp(-1, 1)  # batch statistics of these 12 images
    buffers = [b.clone() for b in G.buffers()]
    syncbn_calls = []
    forward = torch.nn.SyncBatchNorm.forward
    monkeypatch.setattr(torch.nn.SyncBatchNorm, "forward", lambda self, x: syncbn_calls.append(1) or forward(self, x))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)  # as under accelerate launch
    images = generate(family, G, {"z": z})
    assert syncbn_calls == []  # SyncBatchNorm's forward never ran
    assert torch.allclose(images, expected, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(buffers, G.buffers()))  # the training copy's buffers
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in G.modules())  # G itself stays SyncBN


def test_images_come_from_fixed_chunks_whatever_the_slice():
    """Image k is computed in its chunk of CHUNK images, so any slicing (any world size) gives it."""
    torch.manual_seed(0)
    _, family = tiny_dcgan()
    n = CHUNK + 40
    z = family.noise(n, torch.Generator().manual_seed(2))
    whole = generate(family, family.nets["G"], {"z": z})
    for start, stop in ((0, 7), (CHUNK - 3, CHUNK + 5), (CHUNK + 10, n)):
        assert torch.equal(generate_range(family, family.nets["G"], {"z": z}, start, stop), whole[start:stop])
    assert generate_range(family, family.nets["G"], {"z": z}, 5, 5).numel() == 0


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from shards.__main__ import main

    out = tmp_path_factory.mktemp("shards") / "tiny"  # a 10-image test split: the FID reference
    assert main(["digits", "--out", str(out), "--test-fraction", "0.005", "--seed", "0"]) == 0
    return out


@pytest.fixture(scope="module")
def weights(shards, tmp_path_factory):
    from distgen.data import eval_batches, split_urls

    info = load_info(config.DataConfig(root=str(shards)))
    real = next(eval_batches(split_urls(info, "train", "train"), 4, info))["image"]
    calibration = torch.cat([to_uint8(real).expand(-1, 3, -1, -1),
                             torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)])
    return make_random_weights(tmp_path_factory.mktemp("weights") / "inception-random.pth", images=calibration)


def test_in_training_fid_and_grid_on_two_syncbn_ranks_equal_one_process_evaluation(shards, weights, tmp_path):
    """Two gloo processes run the loop's grid (rank 0 alone) and in-training FID on a SyncBatchNorm
    generator: they finish, and the numbers and pixels are those of launch/evaluate.py's path
    (evaluate_generator, one process, plain BatchNorm) on the same weights."""
    out = tmp_path / "two"
    out.mkdir()
    result = run([str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
                  "tests/sample_ranks.py", str(shards), str(weights), str(out)],
                 env={"ACCELERATE_USE_CPU": "1", "DISTGEN_CACHE_DIR": str(tmp_path / "cache")}, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    two = json.loads((out / "result.json").read_text())
    assert two["world_size"] == 2 and two["buffers_untouched"]

    cfg = recipes.load(ROOT / "recipes" / "dcgan_digits_smoke.yaml",
                       [f"data.root={shards}", "model.z_dim=16", "model.width=8"])
    family = FAMILIES["dcgan"](cfg, load_info(cfg.data))  # as launch/evaluate.py builds it: plain BatchNorm
    family.nets["G"].load_state_dict(load_file(str(out / "G.safetensors")))
    one = evaluate_generator(family, cfg, ["fid"], 10, weights)
    assert one["fid"] > 1.0 and abs(two["fid"] - one["fid"]) <= 1e-6 * one["fid"], (two, one)
    inputs, cols = family.grid_inputs(cfg.run.seed)
    grid = save_grid(generate(family, family.nets["G"], inputs), tmp_path / "grid.png", cols)
    assert hashlib.sha256(grid.read_bytes()).hexdigest() == two["grid_sha256"]


# ----------------------------------------------------------------------------- the EMA


def test_ema_copies_buffers_and_averages_parameters():
    """stylegan2-ada's rule: parameters p_ema = beta p_ema + (1 - beta) p; buffers (BatchNorm running
    statistics, spectral norm's u and v) copied from G, never averaged."""
    torch.manual_seed(0)
    _, family = tiny_dcgan()
    G = family.nets["G"]
    ema = EMA(syncbn(G), half_life_kimg=1.0, rampup=0.0, images_per_step=100)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in ema.module.modules())  # plain BatchNorm
    before = [p.clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
        G.train()(family.noise(16))  # moves G's running statistics
    ema.update(G)
    beta = 0.5 ** (100 / 1000)
    for old, new, mine in zip(before, G.parameters(), ema.module.parameters()):
        assert torch.allclose(mine, beta * old + (1 - beta) * new, atol=1e-6)
    for mine, theirs in zip(ema.module.buffers(), G.buffers()):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize("batch_size, processes, grad_accum", [(64, 1, 1), (16, 2, 2), (32, 8, 1), (8, 4, 4)])
def test_ema_half_life_is_counted_in_images_whatever_the_batch_split(batch_size, processes, grad_accum):
    """After train.ema_kimg thousand images, however they were batched, the EMA holds half of its
    start and half of the (constant) weights it followed; the ramp-up starts it at G itself."""
    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = EMA(net, half_life_kimg=2.048, rampup=0.0, images_per_step=batch_size * processes * grad_accum)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(2048 // (batch_size * processes * grad_accum)):
        ema.update(net)
    assert ema.nimg == 2048
    assert ema.module.weight.item() == pytest.approx(0.5, abs=1e-6)
    ramped = EMA(torch.nn.Linear(1, 1, bias=False), half_life_kimg=2.048, rampup=0.05, images_per_step=64)
    ramped.update(net)  # at 0 images the ramped half-life is 0: the EMA becomes G
    assert ramped.module.weight.item() == 1.0
    assert ramped.beta() == pytest.approx(0.5 ** (64 / (64 * 0.05)))


def test_loop_ema_counts_the_global_batch_and_copies_running_statistics(digits, tmp_path):
    """The adversarial loop's EMA: images per generator step = batch_size x processes x grad_accum,
    and at every checkpoint its BatchNorm running statistics are G's, not an average of them."""
    run_dir = tmp_path / "ema"
    train("dcgan_digits_smoke", *TINY_GAN, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=3",
          "train.grad_accum=2", "train.ema_kimg=1", "train.ema_rampup=0", "log.every=3")
    ckpt = run_dir / "checkpoints" / "step_3"
    meta = json.loads((ckpt / "meta.json").read_text())
    state = torch.load(ckpt / meta["custom"]["ema"], weights_only=True)
    G = load_file(str(ckpt / meta["family_nets"]["G"]))
    assert int(state["nimg"]) == 3 * 16 * 1 * 2
    assert optimizer_steps(ckpt)["G"] == 3  # one generator step per two micro-batches, one EMA update per step
    stats = [k for k in G if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(state[f"module.{k}"], G[k]) for k in stats)
    assert not all(torch.equal(state[f"module.{k}"], G[k]) for k in G if k.endswith("weight"))


def test_old_ema_decay_key_is_refused_with_its_equivalent():
    with pytest.raises(config.ConfigError, match=r"train\.ema_kimg=44\.34 x P") as err:
        recipes.from_dict({"family": "dcgan", "train": {"ema": 0.999, "batch_size": 64}})
    assert "'train.ema'" in str(err.value)
    assert math.isclose(config.decay_to_kimg(0.999, 512), 354.7, rel_tol=1e-3)
    upgraded = recipes.from_dict(config.upgrade({"family": "dcgan", "train": {"ema": 0.999}}))
    assert upgraded.train.ema_kimg == pytest.approx(44.34, rel=1e-3)  # old run dirs still load
