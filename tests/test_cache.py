"""data.cache=ram: the same batches as the stream for the same seed, exact resume, refusal with sizes;
and the decode-free encoding: same pixels, same FID reference features, readable by WebDataset itself."""
from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

import distgen.data.cache as cache_module
from distgen.config import DataConfig
from distgen.data import eval_batches, load_info, split_urls, train_loader
from distgen.errors import DataError
from shards.__main__ import main as shards_main
from test_stream import write_shards

OPTIONS = [dict(), dict(num_workers=2, hflip=True, crop=6, random_crop=True),
           dict(mode="resampled", num_workers=2, hflip=True)]


@pytest.fixture(scope="module")
def ids(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("cache") / "ids")


def batches(root, n, cache="none", start=0, **extra):
    cfg = DataConfig(root=str(root), shuffle_buffer=16, cache=cache, **extra)
    info = load_info(cfg)
    return list(itertools.islice(iter(train_loader(split_urls(info, "train", "t"), 10, info, cfg, seed=3, rank=0,
                                                   world_size=1, start_batch=start)), n))


def assert_same(a_list, b_list):
    assert len(a_list) == len(b_list)
    for a, b in zip(a_list, b_list):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("extra", OPTIONS)
def test_ram_gives_the_streams_batches_and_resumes_exactly(ids, extra):
    stream = batches(ids, 25, **extra)  # 250 samples: over two epochs of the 116-sample split
    ram = batches(ids, 25, cache="ram", **extra)
    assert_same(stream, ram)
    assert {int(e) for b in ram for e in b["epoch"]} == {0, 1, 2}
    assert not torch.equal(ram[0]["label"], ram[1]["label"])
    for start in (5, 12):  # resume mid-epoch and in the next epoch
        assert_same(batches(ids, 6, cache="ram", start=start, **extra), ram[start:start + 6])


def test_ram_splits_the_shards_between_processes_with_equal_batches(ids):
    cfg = DataConfig(root=str(ids), shuffle_buffer=16, cache="ram")
    info = load_info(cfg)
    seen = []
    for rank in (0, 1):
        got = list(itertools.islice(iter(train_loader(split_urls(info, "train", "t"), 2, info, cfg, 3, rank, 2)), 29))
        seen.append([int(x) for b in got for x in b["label"]])  # 58 = 116 // 2: one epoch each
    assert len(seen[0]) == len(seen[1]) == 58
    assert not set(seen[0]) & set(seen[1])  # disjoint within the epoch


def test_cache_that_would_not_fit_is_refused_with_sizes(ids, monkeypatch):
    monkeypatch.setattr(cache_module, "available_bytes", lambda device: (5000, "of host memory available"))
    with pytest.raises(DataError, match=r"data.cache=ram \(rank 0\): this process's share is 116 images of 8x8x1 "
                                        r"uint8 = 0.00 GiB, more than 80% of the 0.00 GiB of host memory available; "
                                        r"use data.cache=none"):
        batches(ids, 1, cache="ram")


def test_cache_device_on_cpu_runs(ids):
    assert_same(batches(ids, 3, cache="device"), batches(ids, 3))  # `device` with no GPU: the CPU


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    for enc in ("raw", "png"):
        assert shards_main(["digits-m", "--out", str(root / enc), "--encoding", enc, "--test-fraction", "0.003"]) == 0
    return root


def test_raw_and_png_hold_the_same_pixels_and_reference_features(both, tmp_path):
    from distgen.evaluation.inception import load_extractor
    from distgen.evaluation.random_weights import make_random_weights
    from distgen.evaluation.reference import reference_features

    assert next((both / "raw").glob("train-*.tar")).read_bytes().count(b".npy") > 0
    assert next((both / "png").glob("train-*.tar")).read_bytes().count(b".png") > 0
    weights = make_random_weights(tmp_path / "w.pth")
    features = {}
    for enc in ("raw", "png"):
        cfg = DataConfig(root=str(both / enc))
        info = load_info(cfg)
        images = torch.cat([b["image"] for b in eval_batches(split_urls(info, "test", "t"), 64, info)])
        features[enc] = reference_features(load_extractor(weights, ["2048"]), ["2048"], cfg, info, 32, weights,
                                           gather=lambda t: t)["2048"]
        features[enc + "_images"] = images
    assert torch.equal(features["raw_images"], features["png_images"])
    assert features["raw"].numpy().tobytes() == features["png"].numpy().tobytes()  # byte-identical


def test_raw_shards_are_read_by_webdatasets_own_pipeline(both):
    raw = next(iter(wds.WebDataset(str(both / "raw" / "test-000000.tar"), shardshuffle=False).decode()))
    png = next(iter(wds.WebDataset(str(both / "png" / "test-000000.tar"), shardshuffle=False)))
    assert raw["__key__"] == png["__key__"]
    assert raw["npy"].dtype == np.uint8 and raw["npy"].shape == (32, 32, 3)
    assert np.array_equal(raw["npy"], np.asarray(Image.open(io.BytesIO(png["png"]))))


def test_converter_output_does_not_depend_on_workers(tmp_path):
    from test_converters import course_layout, samples

    course_layout(tmp_path / "raw", {"train": [i % 10 for i in range(150)], "test": [1, 2]})
    got = {}
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        assert shards_main(["mnistm", "--src", str(tmp_path / "raw"), "--out", str(out), "--workers", workers]) == 0
        got[workers] = [(s["key"], s["ext"], s["cls"], s["json"], np.asarray(s["image"]).tobytes())
                        for s in samples(out, "train")]
    assert len(got["1"]) == 150 and got["1"] == got["2"]


def test_training_with_ram_resumes_exactly(digits, tmp_path):
    from checkpoint_state import assert_resumed_from, assert_same_checkpoint
    from conftest import TINY_GAN, metrics, train
    from test_train import _weights

    common = [*TINY_GAN, f"data.root={digits}", "data.cache=ram", "data.hflip=true", "run.checkpoint_every=3",
              "run.keep_last=0", "data.shuffle_buffer=64"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    train("dcgan_digits_smoke", *common, f"run.dir={straight}", "train.steps=6", "log.every=3")
    train("dcgan_digits_smoke", *common, f"run.dir={split}", "train.steps=3", "log.every=3")
    resumed = train("dcgan_digits_smoke", *common, f"run.dir={split}", "train.steps=6", "log.every=3",
                    resume="auto")
    assert_resumed_from(split, split / "checkpoints" / "step_3", resumed.stdout + resumed.stderr)
    assert_same_checkpoint(straight / "checkpoints" / "step_6", split / "checkpoints" / "step_6",
                           expect=("G.safetensors", "D.safetensors", "optimizer.bin", "random_states_0.pkl"))
    a = _weights(straight / "checkpoints" / "step_6")
    first = _weights(split / "checkpoints" / "step_3")
    assert any(not torch.equal(first[k], a[k]) for k in a)
    assert [r["step"] for r in metrics(split)] == [3, 6]
