"""The shard stream at scale: two real ranks over 5 shards in both modes, exact resume without replay,
the test split once across ranks, bad input skipped and counted, pipe: URLs, failures before training.

Fixtures are tiny tars written with WebDataset's TarWriter in the converter's layout, where every
sample's class is its own id, so a batch's labels say exactly which samples it holds.
"""
from __future__ import annotations

import collections
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

import distgen.data.stream as stream_module
from conftest import BIN, ROOT, run
from distgen.config import DataConfig
from distgen.recipes import load
from distgen.data import eval_batches, load_info, split_urls, to_device, train_loader
from distgen.errors import ConfigError, DataError

TRAIN, TEST = [24, 24, 24, 24, 20], [17, 10]  # samples per shard: uneven on purpose


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(out: Path, train=TRAIN, test=TEST, size=8) -> Path:
    """Shards + index.json as `python -m shards` writes them; sample `id` has class `id`."""
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits, next_id = {}, 0
    for split, sizes in (("train", train), ("test", test)):
        names = []
        for i, n in enumerate(sizes):
            names.append(f"{split}-{i:06d}.tar")
            with wds.TarWriter(str(out / names[-1])) as sink:
                for _ in range(n):
                    image = rng.integers(0, 256, (size, size), dtype=np.uint8)
                    sink.write({"__key__": f"{split}{next_id:05d}", "png": png(image), "cls": str(next_id)})
                    next_id += 1
        splits[split] = {"shards": names, "count": sum(sizes)}
    (out / "index.json").write_text(json.dumps({
        "format": "ids", "image_size": size, "channels": 1, "class_names": [str(i) for i in range(next_id)],
        "attr_names": [], "splits": splits, "skipped": {"count": 0, "files": []}}))
    return out


@pytest.fixture(scope="module")
def ids(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("ids") / "ids")


def loader(root, batch=6, seed=1, rank=0, world=1, start=0, **data):
    data.setdefault("num_workers", 0)  # in this process unless a test asks for workers (caplog sees the skips)
    cfg = DataConfig(root=str(root), shuffle_buffer=16, **data)
    info = load_info(cfg)
    return train_loader(split_urls(info, "train", "data.train_split"), batch, info, cfg, seed, rank, world,
                        start_batch=start)


def take(root, n, **kw) -> list[dict]:
    """n batches as the loops take them (to_device: uint8 images scaled to [-1, 1])."""
    return [to_device(b, "cpu") for b in itertools.islice(iter(loader(root, **kw)), n)]


# ---------------------------------------------------------------- two real ranks


def test_two_real_ranks_split_disjoint_equal_batches_and_eval_once(ids, tmp_path):
    out = tmp_path / "ranks.json"
    result = run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", "tests/stream_ranks.py",
                  str(ids), str(out)], timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = json.loads(out.read_text())
    per_rank = sum(TRAIN) // 4 * 2  # 4 readers (2 ranks x 2 workers), each exactly count // 4 an epoch
    for mode in ("split", "resampled"):
        counts = [collections.Counter(r[mode]["epochs"]) for r in ranks]
        for epoch in range(3):  # the same number of samples, hence batches, per epoch on both ranks
            assert counts[0][epoch] == counts[1][epoch] == per_rank, (mode, epoch, counts)
        assert len(ranks[0][mode]["labels"]) == len(ranks[1][mode]["labels"])
        assert ranks[0][mode]["skipped"] == ranks[1][mode]["skipped"] == 0
    epoch_sets = [[{lab for lab, e in zip(r["split"]["labels"], r["split"]["epochs"]) if e == epoch} for r in ranks]
                  for epoch in range(3)]
    for epoch, (a, b) in enumerate(epoch_sets):
        assert a and b and not a & b, f"split mode: ranks share samples in epoch {epoch}: {sorted(a & b)}"
        assert len(a | b) >= sum(TRAIN) * 0.75  # the deal covers most of the split every epoch
    assert len({frozenset(sets[0]) for sets in epoch_sets}) > 1  # reshuffled: rank 0's share changes
    evaluated = ranks[0]["eval"] + ranks[1]["eval"]
    first_test = sum(TRAIN)
    assert sorted(evaluated) == list(range(first_test, first_test + sum(TEST)))  # every test sample exactly once
    assert abs(len(ranks[0]["eval"]) - len(ranks[1]["eval"])) == sum(TEST) % 2  # the remainder is explicit


# ---------------------------------------------------------------- seeded, resumable, continued


@pytest.mark.parametrize("mode, workers", [("split", 0), ("split", 2), ("resampled", 2)])
def test_resume_continues_the_stream_exactly(ids, mode, workers):
    extra = dict(mode=mode, num_workers=workers, hflip=True, crop=6, random_crop=True)
    whole = take(ids, 23, **extra)
    again = take(ids, 23, **extra)
    for start in (7, 20):  # mid-epoch, and a few epochs in (an epoch is 116 // readers samples)
        resumed = take(ids, 3, start=start, **extra)
        for a, b in zip(whole[start:start + 3], resumed):
            for key in ("image", "label", "epoch"):
                assert torch.equal(a[key], b[key]), (mode, workers, start, key)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(whole, again))  # seeded
    other_seed = take(ids, 2, seed=2, **extra)
    assert not torch.equal(other_seed[0]["label"], whole[0]["label"])


def test_resume_does_not_replay_earlier_epochs(ids, monkeypatch):
    reads = []
    original = stream_module.read_shard
    monkeypatch.setattr(stream_module, "read_shard", lambda url, skips, *rest: (reads.append(url), original(url, skips, *rest))[1])
    per_epoch = sum(TRAIN) // 6  # batches per epoch: one reader, batches of 6
    take(ids, 1, start=per_epoch * 40)  # epoch 39 or 40: 39 x 116 samples are not read again
    assert len(reads) <= 2 * len(TRAIN), f"resuming about 40 epochs in read {len(reads)} shards"


# ---------------------------------------------------------------- transforms


def test_transforms_channels_crop_flip(ids):
    plain = take(ids, 2)
    assert plain[0]["image"].shape == (6, 1, 8, 8) and plain[0]["image"].min() >= -1 and plain[0]["image"].max() <= 1
    rgb = take(ids, 2, channels=3)
    assert rgb[0]["image"].shape == (6, 3, 8, 8) and torch.equal(rgb[0]["image"][:, 0], rgb[0]["image"][:, 2])
    assert torch.equal(rgb[0]["image"][:, :1], plain[0]["image"])
    assert load_info(DataConfig(root=str(ids), channels=3)).channels == 3  # what the nets are built for
    centre = take(ids, 1, crop=4, image_size=4)[0]["image"]
    assert torch.equal(centre, plain[0]["image"][..., 2:6, 2:6])
    flipped = torch.cat([b["image"] for b in take(ids, 4, hflip=True)])
    same = torch.cat([b["image"] for b in take(ids, 4)])
    is_flip = [torch.equal(f, s.flip(-1)) and not torch.equal(f, s) for f, s in zip(flipped, same)]
    assert 0 < sum(is_flip) < len(is_flip)  # about half are flipped
    evaluated = next(eval_batches(split_urls(load_info(DataConfig(root=str(ids))), "test", "x"), 4,
                                  load_info(DataConfig(root=str(ids), channels=3)), image_size=4, crop=4))
    assert evaluated["image"].shape == (4, 3, 4, 4)
    with pytest.raises(ConfigError, match="data.crop"):
        load_info(DataConfig(root=str(ids), crop=9))


# ---------------------------------------------------------------- bad input at run time


def write_broken_shards(out: Path, corrupt: int = 5, **kwargs) -> Path:
    """write_shards, then sample `corrupt` of shard 1 becomes a corrupt PNG and shard 3 is cut off in
    the middle of a sample."""
    out = write_shards(out, **kwargs)
    shard = out / "train-000001.tar"
    samples = list(wds.WebDataset(str(shard), shardshuffle=False))
    samples[corrupt]["png"] = b"\x89PNG\r\n\x1a\n" + b"not an image" * 8
    with wds.TarWriter(str(shard)) as sink:
        for s in samples:
            sink.write({k: v for k, v in s.items() if k in ("__key__", "png", "cls")})
    truncated = out / "train-000003.tar"
    truncated.write_bytes(truncated.read_bytes()[:truncated.stat().st_size // 2 + 300])
    return out


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    return write_broken_shards(tmp_path_factory.mktemp("broken") / "broken")


def test_corrupt_image_and_truncated_tar_are_skipped_and_counted(broken, caplog):
    batches = take(broken, 40, max_skip_fraction=0.5)  # one reader: 116 samples an epoch, batches of 6
    assert all(len(b["label"]) == 6 for b in batches)  # a skipped sample's place goes to the next good one
    epochs = collections.Counter(int(e) for b in batches for e in b["epoch"])
    assert epochs[0] == epochs[1] == sum(TRAIN)  # and every epoch still has its full length
    skipped = sum(int(b["skipped"]) for b in batches)
    assert skipped >= 4  # each epoch: the corrupt image and the truncated shard, at least once each
    assert "skipped sample train00029 of" in caplog.text  # each skip is warned, naming the sample or shard
    assert "skipped the rest of shard" in caplog.text and "train-000003.tar (EOFError" in caplog.text
    # evaluation over the same damage goes on too, with what can be read
    info = load_info(DataConfig(root=str(broken)))
    assert sum(len(b["label"]) for b in eval_batches(info.splits["train"], 8, info)) < sum(TRAIN)


def test_too_many_skips_stop_the_run_with_a_clear_error(broken):
    with pytest.raises(DataError, match="max_skip_fraction"):
        take(broken, 40, max_skip_fraction=0.001)


# ---------------------------------------------------------------- URLs


def test_pipe_urls_give_the_same_stream(ids, digits):
    pattern = f"pipe:cat {ids}/train-{{000000..000004}}.tar"
    piped = take(pattern, 5, index=str(ids / "index.json"), mode="split")
    local = take(ids, 5)
    for a, b in zip(piped, local):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    globbed = take(f"{ids}/train-*.tar", 5, index=str(ids / "index.json"))
    assert all(torch.equal(a["label"], b["label"]) for a, b in zip(globbed, local))
    # the real converter's shards through pipe: as well
    info = load_info(DataConfig(root=f"pipe:cat {digits}/test-{{000000..000001}}.tar",
                                index=str(digits / "index.json")))
    assert sum(len(b["image"]) for b in eval_batches(info.splits["train"], 64, info)) == info.counts["test"]


# ---------------------------------------------------------------- failures before training


def test_bad_paths_and_too_few_shards_fail_before_training(ids, tmp_path):
    copy = write_shards(tmp_path / "copy")
    (copy / "train-000002.tar").unlink()
    with pytest.raises(DataError, match=r"train-000002\.tar' does not exist.*python -m shards"):
        loader(copy)
    with pytest.raises(DataError, match="matches no files"):
        load_info(DataConfig(root=f"{ids}/nothing-*.tar", index=str(ids / "index.json")))
    with pytest.raises(DataError, match=r"5 shards for 3 rank\(s\) x 2 worker\(s\) = 6 readers.*data.mode=resampled"):
        loader(ids, world=3, num_workers=2)
    assert len(take(ids, 1, world=3, rank=2, num_workers=2, mode="resampled")[0]["label"]) == 6


def test_recipe_keys_are_checked():
    recipe = ROOT / "recipes" / "quickstart.yaml"
    cfg = load(recipe, ["data.mode=resampled", "data.channels=3", "data.crop=28", "data.random_crop=true",
                        "data.hflip=true", "data.max_skip_fraction=0.05"])
    assert (cfg.data.mode, cfg.data.channels, cfg.data.crop, cfg.data.hflip) == ("resampled", 3, 28, True)
    for bad, message in (("data.mode=shuffled", "valid choices: split, resampled"), ("data.channels=2", "0, 1, 3"),
                         ("data.random_crop=true", "needs a crop size"), ("data.max_skip_fraction=2", r"\[0, 1\]")):
        with pytest.raises(ConfigError, match=message):
            load(recipe, [bad])
