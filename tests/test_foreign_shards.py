"""Shards made by other tools: `python -m shards index` indexes them, and each layout trains 5 steps.

Layouts, each written the way its tool writes it: webdataset.ShardWriter (`train-000000.tar`, png +
cls), img2dataset (`00000.tar` with jpg, txt, json), GNU `tar --sort=name` of a folder of files, and
gzip-compressed shards. Also: a wrong per-shard count and a mislabelled sample each stop with one
line naming the shard (and key), the index command reports problems by shard and key, and a folder
without index.json names the command that makes one.
"""
from __future__ import annotations

import gzip
import io
import itertools
import json
import re
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from conftest import TINY_GAN, run, train
from distgen.config import DataConfig
from distgen.data import load_info, split_urls, train_loader
from distgen.errors import DataError
from shards.__main__ import main as shards_main

SIZE, PER_SHARD, SHARDS = 32, 16, 4


def image(i: int, size: int = SIZE) -> Image.Image:
    return Image.fromarray(np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8))


def encoded(i: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image(i).save(buf, format=fmt)
    return buf.getvalue()


def shard_writer(out: Path) -> Path:
    """webdataset.ShardWriter with its own encoders: PIL image -> .png, int -> .cls."""
    out.mkdir(parents=True)
    with wds.ShardWriter(str(out / "train-%06d.tar"), maxcount=PER_SHARD, verbose=0) as sink:
        for i in range(PER_SHARD * SHARDS):
            sink.write({"__key__": f"s{i:05d}", "png": image(i), "cls": i % 10})
    with wds.ShardWriter(str(out / "test-%06d.tar"), maxcount=PER_SHARD, verbose=0) as sink:
        for i in range(8):
            sink.write({"__key__": f"t{i:05d}", "png": image(1000 + i), "cls": i % 10})
    return out


def img2dataset(out: Path) -> Path:
    """img2dataset's output: 00000.tar ... with .jpg, .txt (caption), .json (url, status, ...), plus
    the parquet and stats files it writes beside them."""
    out.mkdir(parents=True)
    for s in range(SHARDS):
        with wds.TarWriter(str(out / f"{s:05d}.tar")) as sink:
            for j in range(PER_SHARD):
                key = f"{s:05d}{j:04d}"
                sink.write({"__key__": key, "jpg": encoded(s * PER_SHARD + j, "JPEG"), "txt": f"a photo {key}",
                            "json": {"url": f"http://example.com/{key}.jpg", "key": key, "status": "success",
                                     "width": SIZE, "height": SIZE}})
        (out / f"{s:05d}_stats.json").write_text("{}")
        (out / f"{s:05d}.parquet").write_bytes(b"PAR1")
    return out


def gnu_tar(out: Path, tmp: Path) -> Path:
    """`tar --sort=name -cf train-00000N.tar -C folder .` of folders of NAME.png + NAME.cls files."""
    out.mkdir(parents=True)
    for s in range(SHARDS):
        folder = tmp / f"files{s}"
        folder.mkdir()
        for j in range(PER_SHARD):
            i = s * PER_SHARD + j
            image(i).save(folder / f"img{i:05d}.png")
            (folder / f"img{i:05d}.cls").write_text(str(i % 10))
        subprocess.run(["tar", "--sort=name", "-cf", str(out / f"train-{s:06d}.tar"), "-C", str(folder), "."],
                       check=True)
    return out


def gzipped(out: Path) -> Path:
    """TarWriter shards, gzip-compressed: train-00000N.tar.gz."""
    out.mkdir(parents=True)
    for s in range(SHARDS):
        buf = io.BytesIO()
        with wds.TarWriter(buf) as sink:
            for j in range(PER_SHARD):
                i = s * PER_SHARD + j
                sink.write({"__key__": f"g{i:05d}", "png": encoded(i), "cls": str(i % 10)})
        (out / f"train-{s:06d}.tar.gz").write_bytes(gzip.compress(buf.getvalue()))
    return out


def index(src, *extra) -> int:
    return shards_main(["index", str(src), "--workers", "2", *extra])


@pytest.mark.parametrize("layout, recipe", [(shard_writer, "quickstart"), (img2dataset, "dcgan_digits_smoke"),
                                            (gnu_tar, "quickstart"), (gzipped, "quickstart")])
def test_foreign_shards_index_and_train_five_steps(tmp_path, capsys, layout, recipe):
    src = layout(tmp_path / "shards", tmp_path) if layout is gnu_tar else layout(tmp_path / "shards")
    assert index(src) == 0, capsys.readouterr().err
    made = json.loads((src / "index.json").read_text())
    assert made["image_size"] == SIZE and made["channels"] == 3
    assert made["splits"]["train"]["count"] == PER_SHARD * SHARDS
    assert made["splits"]["train"]["counts"] == [PER_SHARD] * SHARDS
    assert made["class_names"] == ([] if layout is img2dataset else [str(d) for d in range(10)])
    if layout is shard_writer:
        assert made["splits"]["test"]["count"] == 8  # test-* by the file-name convention
    run_dir = tmp_path / "run"
    result = train(recipe, *TINY_GAN, f"data.root={src}", "train.steps=5", f"run.dir={run_dir}",
                   "train.batch_size=8", "log.every=5")
    assert (run_dir / "checkpoints" / "step_5").is_dir(), result.stderr[-2000:]


def test_split_patterns_and_globs(tmp_path, capsys):
    src = img2dataset(tmp_path / "shards")
    assert index(f"{src}/{{00000..00003}}.tar", "--split", "val=00003.tar") == 0
    made = json.loads((src / "index.json").read_text())
    assert made["splits"]["train"]["shards"] == ["00000.tar", "00001.tar", "00002.tar"]
    offsets = made["splits"]["val"].pop("offsets")  # where each sample starts: readers seek there
    assert made["splits"]["val"] == {"shards": ["00003.tar"], "count": PER_SHARD, "counts": [PER_SHARD]}
    assert len(offsets) == 1 and len(offsets[0]) == PER_SHARD and offsets[0][0] == 0
    assert index(f"{src}/*.tar", "--out", str(tmp_path / "elsewhere" / "index.json")) == 0
    info = load_info(DataConfig(root=str(tmp_path / "elsewhere")))
    assert info.splits["train"][0] == str(tmp_path / "elsewhere" / ".." / "shards" / "00000.tar")
    assert info.counts["train"] == PER_SHARD * SHARDS


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_index_reports_each_problem_by_shard_and_key(tmp_path, capsys):
    src = tmp_path / "bad"
    src.mkdir()
    # a label stored after another sample (an unsorted `tar` of a folder), and a sample with no image
    write_tar(src / "train-000000.tar", [("a.png", encoded(0)), ("b.png", encoded(1)), ("b.cls", b"1"),
                                         ("a.cls", b"0"), ("c.cls", b"2")])
    small = io.BytesIO()
    image(5, 16).save(small, format="PNG")
    write_tar(src / "train-000001.tar", [("d.png", small.getvalue()), ("d.cls", b"3")])  # mixed sizes
    assert index(src) == 2
    err = capsys.readouterr().err
    assert f"{src}/train-000000.tar: sample 'a': its .cls lies apart from its other members" in err
    assert f"{src}/train-000000.tar: sample 'c': no image" in err
    assert f"warning: {src}/train-000001.tar: sample 'd' is 16x16" in err
    assert not (src / "index.json").exists()


def labelled_set(tmp_path: Path) -> Path:
    src = tmp_path / "set"
    src.mkdir()
    for s in range(2):
        write_tar(src / f"train-{s:06d}.tar", [m for j in range(PER_SHARD) for m in
                                               ((f"k{s}{j:03d}.png", encoded(j)), (f"k{s}{j:03d}.cls", b"1"))])
    assert index(src) == 0
    return src


def test_wrong_count_stops_the_stream_naming_the_shard(tmp_path):
    src = labelled_set(tmp_path)
    made = json.loads((src / "index.json").read_text())
    made["splits"]["train"].pop("offsets")  # a hand-written index: counts, no member offsets
    made["splits"]["train"]["counts"] = [PER_SHARD - 4, PER_SHARD]  # a hand-edited count: one shard holds more
    made["splits"]["train"]["count"] = 2 * PER_SHARD - 4
    (src / "index.json").write_text(json.dumps(made))
    cfg = DataConfig(root=str(src), num_workers=2, shuffle_buffer=4)
    info = load_info(cfg)
    with pytest.raises(DataError) as caught:
        list(itertools.islice(iter(train_loader(split_urls(info, "train", "t"), 4, info, cfg, 0, 0, 1)), 40))
    message = str(caught.value)  # one line, not the DataLoader worker's traceback
    assert message == (f"shard '{src}/train-000000.tar' holds more than the {PER_SHARD - 4} samples index.json "
                       f"says; the index does not describe this shard (replaced or hand-written?), and training "
                       f"on it would skip or repeat samples. Remake the index with `python -m shards index {src}`")


def test_shard_with_fewer_samples_than_indexed_stops_when_read_to_its_end(tmp_path):
    src = labelled_set(tmp_path)
    made = json.loads((src / "index.json").read_text())
    made["splits"]["train"].pop("offsets")  # a hand-written index: counts, no member offsets
    made["splits"]["train"]["counts"] = [PER_SHARD, PER_SHARD + 5]
    made["splits"]["train"]["count"] = 2 * PER_SHARD + 5
    (src / "index.json").write_text(json.dumps(made))
    cfg = DataConfig(root=str(src), shuffle_buffer=4)
    info = load_info(cfg)
    with pytest.raises(DataError, match=rf"^shard '{src}/train-000001.tar' holds {PER_SHARD} samples but "
                                        rf"index.json says {PER_SHARD + 5};"):
        list(itertools.islice(iter(train_loader(split_urls(info, "train", "t"), 4, info, cfg, 0, 0, 1)), 40))


@pytest.mark.parametrize("bad, expected", [
    ([("a.png", 0), ("b.png", 1), ("b.cls", None), ("a.cls", None)], "sample 'a'"),  # label apart from image
    ([("b.png", 1), ("a.png", 0), ("a.cls", None)], "sample 'b' has no label (.cls) next to its image"),
])
def test_mislabelled_sample_is_one_clear_error(tmp_path, bad, expected):
    src = tmp_path / "set"
    src.mkdir()
    for s in range(2):  # the bad sample first in every shard, so the first batch meets it
        good = [m for j in range(PER_SHARD) for m in ((f"k{j:03d}.png", encoded(j)), (f"k{j:03d}.cls", b"1"))]
        write_tar(src / f"train-{s:06d}.tar", [(name, encoded(arg) if arg is not None else b"1")
                                               for name, arg in bad] + good)
    (src / "index.json").write_text(json.dumps({  # hand-written: `shards index` refuses these shards
        "image_size": SIZE, "channels": 3, "class_names": [str(d) for d in range(10)],
        "splits": {"train": {"shards": ["train-000000.tar", "train-000001.tar"], "count": 2 * PER_SHARD + 4}}}))
    result = run(["python", "launch/train.py", "recipes/quickstart.yaml", *TINY_GAN, f"data.root={src}",
                  "train.steps=5", f"run.dir={tmp_path / 'run'}", "train.batch_size=4", "data.shuffle_buffer=2"])
    assert result.returncode == 2, result.stderr[-2000:]
    errors = re.findall(r"error: [^\r\n]*", result.stderr)  # (a progress bar may share its line)
    assert len(errors) == 1, result.stderr[-2000:]
    assert errors[0].startswith(f"error: shard '{src}/train-00000") and expected in errors[0], errors
    assert "Traceback" not in result.stderr


def test_missing_index_names_the_index_command(tmp_path):
    src = img2dataset(tmp_path / "shards")
    with pytest.raises(DataError, match=rf"no index.json .*`python -m shards index {src}`"):
        load_info(DataConfig(root=str(src)))
