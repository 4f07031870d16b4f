"""Shard converters on tiny fixtures in each dataset's real on-disk layout (see docs/data.md).

Every format and layout is converted through the real CLI entry point; the tests check split
counts, labels, attributes, tags, image size and channels, that an unreadable image is skipped and
counted, and that a wrong layout stops before writing anything, naming the file it expected.
"""
from __future__ import annotations

import bz2
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distgen.config import DataConfig
from distgen.data import eval_batches, load_info
from shards.__main__ import main as shards_main


# ---------------------------------------------------------------- fixture and reading helpers

def save_image(path: Path, size=(28, 28), mode="RGB", color=None, seed=0) -> Path:
    """A random (or one-colour) image at `path`, format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if color is not None:
        image = Image.new(mode, size, color)
    else:
        shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
        image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode)
    image.save(path)
    return path


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n truncated download")
    return path


def convert(fmt: str, src: Path | None, out: Path, *extra: str) -> int:
    return shards_main([fmt, *(["--src", str(src)] if src else []), "--out", str(out), *extra])


def index_of(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


def samples(out: Path, split: str) -> list[dict]:
    """Every sample of a split in shard order: key, image (PIL), cls, json, and the image's extension."""
    result = []
    for name in index_of(out)["splits"][split]["shards"]:
        grouped: dict[str, dict] = {}
        with tarfile.open(out / name) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                grouped.setdefault(key, {"key": key})[ext] = tar.extractfile(member).read()
        for sample in grouped.values():
            ext = next(e for e in ("npy", "png", "jpg") if e in sample)
            image = Image.fromarray(np.load(io.BytesIO(sample[ext]))) if ext == "npy" else \
                Image.open(io.BytesIO(sample[ext]))
            result.append({"key": sample["key"], "ext": ext, "image": image,
                           "cls": int(sample["cls"]) if "cls" in sample else None,
                           "json": json.loads(sample["json"])})
    return result


def counts(out: Path) -> dict:
    return {split: entry["count"] for split, entry in index_of(out)["splits"].items()}


def assert_rejected(capsys, fmt: str, src: Path, out: Path, *expected: str, extra=()) -> None:
    """Exit code 2, one `error:` line naming each expected text, and nothing written to out."""
    assert convert(fmt, src, out, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    for text in expected:
        assert text in err, f"{text!r} not in {err!r}"
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def course_layout(src: Path, labels: dict[str, list[int]], mode="RGB", size=(28, 28)) -> None:
    """train/00000.png ... + train.csv `image_name,label`, same for test."""
    for split, split_labels in labels.items():
        rows = ["image_name,label"]
        for i, label in enumerate(split_labels):
            save_image(src / split / f"{i:05d}.png", size, mode, seed=i)
            rows.append(f"{i:05d}.png,{label}")
        (src / f"{split}.csv").write_text("\n".join(rows) + "\n")


# ---------------------------------------------------------------- mnistm, usps, svhn: course layout

@pytest.mark.parametrize("fmt, mode", [("mnistm", "RGB"), ("usps", "L"), ("svhn", "RGB")])
def test_course_layout_labels_splits_and_skipped_image(tmp_path, capsys, fmt, mode):
    src, out = tmp_path / "raw", tmp_path / "out"
    course_layout(src, {"train": [3, 1, 4, 1], "test": [5, 9]}, mode)
    corrupt(src / "train" / "00002.png")
    assert convert(fmt, src, out) == 0
    assert "skipped 1: train/00002.png" in capsys.readouterr().out
    index = index_of(out)
    assert counts(out) == {"train": 3, "test": 2}
    assert index["skipped"] == {"count": 1, "files": ["train/00002.png"]}
    assert index["channels"] == len(mode) and index["image_size"] == 32 and index["layout"] == "course layout"
    assert index["class_names"] == [str(d) for d in range(10)]
    train = samples(out, "train")
    assert [(s["key"], s["cls"]) for s in train] == [("00000", 3), ("00001", 1), ("00003", 1)]
    assert all(s["image"].size == (32, 32) and s["image"].mode == mode and s["ext"] == "npy" for s in train)  # auto: raw up to 64 px
    assert train[0]["json"]["file"] == "train/00000.png"
    assert [s["cls"] for s in samples(out, "test")] == [5, 9]


def test_course_layout_keeps_native_size_and_converts_one_split(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    course_layout(src, {"train": [0, 7]})
    assert convert("mnistm", src, out, "--size", "28", "--split", "train") == 0
    assert counts(out) == {"train": 2}
    original = np.asarray(Image.open(src / "train" / "00001.png"))
    assert np.array_equal(np.asarray(samples(out, "train")[1]["image"]), original)  # no resize: lossless


def test_course_layout_missing_csv_or_bad_label_is_rejected(tmp_path, capsys):
    src = tmp_path / "raw"
    course_layout(src, {"train": [1, 2], "test": [3]})
    (src / "test.csv").unlink()
    assert_rejected(capsys, "mnistm", src, tmp_path / "out", f"'{src / 'test.csv'}'", "course layout",
                    "original release", "--split train")
    (src / "test.csv").write_text("image_name,label\n00000.png,12\n")
    assert_rejected(capsys, "mnistm", src, tmp_path / "out", "test.csv:2", "'12'")
    (src / "test.csv").write_text("name,digit\n00000.png,1\n")
    assert_rejected(capsys, "svhn", src, tmp_path / "out", "test.csv", "image_name")


def test_unknown_layout_lists_every_accepted_one(tmp_path, capsys):
    src = tmp_path / "raw"
    save_image(src / "stray.png")
    assert_rejected(capsys, "usps", src, tmp_path / "out", "none of the layouts", "train.csv", "usps.h5",
                    "usps.bz2", "usps.t.bz2")
    assert_rejected(capsys, "svhn", tmp_path / "nowhere", tmp_path / "out", "is not a folder")


# ---------------------------------------------------------------- mnistm: original release

def test_mnistm_original_release(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    for split, labels in {"train": [5, 0, 4], "test": [7]}.items():
        lines = []
        for i, label in enumerate(labels):
            save_image(src / f"mnist_m_{split}" / f"{i:08d}.png", seed=i)
            lines.append(f"{i:08d}.png {label}")
        (src / f"mnist_m_{split}_labels.txt").write_text("\n".join(lines) + "\n")
    assert convert("mnistm", src, out) == 0
    assert counts(out) == {"train": 3, "test": 1} and index_of(out)["layout"] == "original release"
    assert [(s["key"], s["cls"]) for s in samples(out, "train")] == [("00000000", 5), ("00000001", 0),
                                                                       ("00000002", 4)]


def test_mnistm_original_release_incomplete(tmp_path, capsys):
    src = tmp_path / "raw"
    save_image(src / "mnist_m_train" / "00000000.png")
    (src / "mnist_m_train_labels.txt").write_text("00000000.png 5\n")
    (src / "mnist_m_test").mkdir()
    assert_rejected(capsys, "mnistm", src, tmp_path / "out", f"'{src / 'mnist_m_test_labels.txt'}'",
                    "original release")


# ---------------------------------------------------------------- usps: h5 and libsvm

def usps_h5(path: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        for split, (data, target) in splits.items():
            f.create_dataset(f"{split}/data", data=data)
            f.create_dataset(f"{split}/target", data=target)


def test_usps_h5(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    src.mkdir()
    train = np.zeros((3, 256), np.float32)
    train[0, 0] = 1.0  # top-left pixel white
    train[1, :] = 0.5
    usps_h5(src / "usps.h5", {"train": (train, np.array([6, 0, 9])), "test": (np.ones((2, 256)), np.array([1, 2]))})
    assert convert("usps", src, out, "--size", "16") == 0
    assert counts(out) == {"train": 3, "test": 2} and index_of(out)["channels"] == 1
    got = samples(out, "train")
    assert [s["cls"] for s in got] == [6, 0, 9]
    first = np.asarray(got[0]["image"])
    assert first.shape == (16, 16) and first[0, 0] == 255 and first[0, 1] == 0
    assert np.all(np.asarray(got[1]["image"]) == 128)
    assert got[0]["json"]["file"] == "usps.h5:train[0]"


def test_usps_h5_without_test_group_is_rejected(tmp_path, capsys):
    src = tmp_path / "raw"
    src.mkdir()
    usps_h5(src / "usps.h5", {"train": (np.zeros((2, 256)), np.array([1, 2]))})
    assert_rejected(capsys, "usps", src, tmp_path / "out", f"'{src / 'usps.h5'}'", "'test'")


def libsvm_line(label: int, values: np.ndarray) -> str:
    return f"{label} " + " ".join(f"{i + 1}:{v:.6f}" for i, v in enumerate(values))


def test_usps_libsvm_labels_values_and_bad_line(tmp_path, capsys):
    src, out = tmp_path / "raw", tmp_path / "out"
    src.mkdir()
    black, white = -np.ones(256), np.ones(256)
    lines = [libsvm_line(1, black), libsvm_line(10, white), "3 1:0.5 oops", libsvm_line(6, black)]
    (src / "usps.bz2").write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))
    (src / "usps.t.bz2").write_bytes(bz2.compress((libsvm_line(3, white) + "\n").encode()))
    assert convert("usps", src, out, "--size", "16") == 0
    assert "skipped 1: usps.bz2:3" in capsys.readouterr().out
    assert counts(out) == {"train": 3, "test": 1}
    assert index_of(out)["skipped"]["files"] == ["usps.bz2:3"]
    got = samples(out, "train")
    assert [s["cls"] for s in got] == [0, 9, 5]  # libsvm labels are digit + 1
    assert np.all(np.asarray(got[0]["image"]) == 0) and np.all(np.asarray(got[1]["image"]) == 255)
    assert samples(out, "test")[0]["cls"] == 2


def test_usps_libsvm_missing_test_file(tmp_path, capsys):
    src = tmp_path / "raw"
    src.mkdir()
    (src / "usps.bz2").write_bytes(bz2.compress(libsvm_line(1, np.zeros(256)).encode()))
    assert_rejected(capsys, "usps", src, tmp_path / "out", f"'{src / 'usps.t.bz2'}'", "libsvm files")
    assert convert("usps", src, tmp_path / "out", "--split", "train") == 0
    assert counts(tmp_path / "out") == {"train": 1}


# ---------------------------------------------------------------- svhn: MATLAB files

def svhn_mat(path: Path, labels: list[int], seed=0) -> np.ndarray:
    from scipy.io import savemat

    x = np.random.default_rng(seed).integers(0, 256, (32, 32, 3, len(labels)), dtype=np.uint8)
    savemat(path, {"X": x, "y": np.array(labels, np.uint8).reshape(-1, 1)})
    return x


def test_svhn_mat_label_10_is_digit_0_and_extra_split(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    src.mkdir()
    x = svhn_mat(src / "train_32x32.mat", [10, 1, 9])
    svhn_mat(src / "test_32x32.mat", [10, 10], seed=1)
    assert convert("svhn", src, out) == 0
    assert counts(out) == {"train": 3, "test": 2}  # no extra_32x32.mat: no extra split
    got = samples(out, "train")
    assert [s["cls"] for s in got] == [0, 1, 9]
    assert np.array_equal(np.asarray(got[2]["image"]), x[..., 2]) and got[2]["image"].mode == "RGB"
    assert [s["cls"] for s in samples(out, "test")] == [0, 0]
    svhn_mat(src / "extra_32x32.mat", [4], seed=2)
    assert convert("svhn", src, tmp_path / "with_extra") == 0
    assert counts(tmp_path / "with_extra") == {"train": 3, "test": 2, "extra": 1}


def test_svhn_mat_wrong_contents_are_rejected(tmp_path, capsys):
    from scipy.io import savemat

    src = tmp_path / "raw"
    src.mkdir()
    svhn_mat(src / "train_32x32.mat", [1])
    assert_rejected(capsys, "svhn", src, tmp_path / "out", f"'{src / 'test_32x32.mat'}'", "MATLAB files")
    savemat(src / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1], [11]])})
    assert_rejected(capsys, "svhn", src, tmp_path / "out", "test_32x32.mat", "y[1]", "10 means digit 0")
    (src / "test_32x32.mat").write_bytes(b"not matlab")
    assert_rejected(capsys, "svhn", src, tmp_path / "out", "test_32x32.mat")


# ---------------------------------------------------------------- celeba

CELEBA_ATTRS = ["5_o_Clock_Shadow", "Smiling", "Young"]


def celeba(src: Path, partitions: dict[str, str], values: dict[str, list[int]]) -> None:
    """img_align_celeba/ (178x218: centre 140 px white, border red), list_attr_celeba.txt, list_eval_partition.txt."""
    for name in partitions:
        image = Image.new("RGB", (178, 218), "red")
        image.paste(Image.new("RGB", (140, 140), "white"), (19, 39))
        (src / "img_align_celeba").mkdir(parents=True, exist_ok=True)
        image.save(src / "img_align_celeba" / name)
    rows = [f"{name} " + " ".join(f"{v:2d}" for v in vals) for name, vals in values.items()]  # runs of spaces
    (src / "list_attr_celeba.txt").write_text(f"{len(rows)}\n{' '.join(CELEBA_ATTRS)} \n" + "\n".join(rows) + "\n")
    (src / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in partitions.items()))


def test_celeba_attributes_splits_and_crop(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    partitions = {"000001.jpg": "0", "000002.jpg": "0", "000003.jpg": "1", "000004.jpg": "2", "000005.jpg": "0"}
    values = {n: [1, -1, 1] if i % 2 else [-1, 1, 1] for i, n in enumerate(partitions)}
    celeba(src, partitions, values)
    corrupt(src / "img_align_celeba" / "000005.jpg")
    assert convert("celeba", src, out) == 0
    index = index_of(out)
    assert counts(out) == {"train": 2, "val": 1, "test": 1}
    assert index["attr_names"] == CELEBA_ATTRS and index["image_size"] == 64 and index["channels"] == 3
    assert index["skipped"]["files"] == ["img_align_celeba/000005.jpg"]
    train = samples(out, "train")
    assert [s["key"] for s in train] == ["000001", "000002"]
    assert train[0]["json"]["attrs"] == {"5_o_Clock_Shadow": 0.0, "Smiling": 1.0, "Young": 1.0}
    assert list(train[1]["json"]["attrs"].values()) == [1.0, 0.0, 1.0]  # in attr_names order
    pixels = np.asarray(train[0]["image"]).astype(int)
    assert pixels.shape == (64, 64, 3) and not np.any(pixels[..., 0] - pixels[..., 2] > 100)  # no red border left
    batch = next(eval_batches(load_info(DataConfig(root=str(out))).splits["train"], 2,
                              load_info(DataConfig(root=str(out)))))
    assert batch["attrs"].tolist() == [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]  # as the data stream reads them


def test_celeba_incomplete_release_is_rejected(tmp_path, capsys):
    src = tmp_path / "raw"
    celeba(src, {"000001.jpg": "0", "000002.jpg": "2"}, {"000001.jpg": [1, 1, 1], "000002.jpg": [1, 1, 1]})
    text = (src / "list_attr_celeba.txt").read_text()
    (src / "list_attr_celeba.txt").write_text("3" + text[1:])  # says 3 images, lists 2: truncated download
    assert_rejected(capsys, "celeba", src, tmp_path / "out", "list_attr_celeba.txt", "lists 2 images")
    (src / "list_eval_partition.txt").unlink()
    assert_rejected(capsys, "celeba", src, tmp_path / "out", f"'{src / 'list_eval_partition.txt'}'",
                    "img_align_celeba/")


# ---------------------------------------------------------------- faces

def faces(src: Path, csv_values: dict[str, list[str]] | None) -> None:
    for split, n in {"train": 3, "test": 2}.items():
        for i in range(n):
            save_image(src / split / f"{i:05d}.png", (64, 64), seed=i)
    for split, rows in (csv_values or {}).items():
        (src / f"{split}.csv").write_text("image_name,Smiling,Male\n" + "".join(r + "\n" for r in rows))


def test_faces_with_attribute_csv(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    faces(src, {"train": ["00000.png,1.0,0.0", "00001.png,0.0,1.0", "00002.png,1,1"], "test": ["00001.png,0,0"]})
    corrupt(src / "train" / "00001.png")
    assert convert("faces", src, out) == 0
    index = index_of(out)
    assert index["attr_names"] == ["Smiling", "Male"] and index["image_size"] == 64
    assert counts(out) == {"train": 2, "test": 1}  # the csv decides; 00001 is unreadable
    assert index["skipped"]["files"] == ["train/00001.png"]
    train = samples(out, "train")
    assert [s["json"]["attrs"] for s in train] == [{"Smiling": 1.0, "Male": 0.0}, {"Smiling": 1.0, "Male": 1.0}]
    assert all(s["cls"] is None and s["image"].size == (64, 64) for s in train)


def test_faces_without_csv_are_unlabelled(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    faces(src, None)
    (src / "train" / "notes.txt").write_text("not an image")
    assert convert("faces", src, out, "--size", "32") == 0
    assert counts(out) == {"train": 3, "test": 2} and index_of(out)["attr_names"] == []
    got = samples(out, "test")
    assert got[0]["image"].size == (32, 32) and "attrs" not in got[0]["json"]


def test_faces_bad_csv_is_rejected(tmp_path, capsys):
    src = tmp_path / "raw"
    faces(src, {"train": ["00000.png,1,0"]})
    assert_rejected(capsys, "faces", src, tmp_path / "out", f"'{src / 'test'}.csv'")
    (src / "test.csv").write_text("image_name,Smiling,Male\n00000.png,1,2\n")
    assert_rejected(capsys, "faces", src, tmp_path / "out", "test.csv:2", "0/1")
    assert_rejected(capsys, "faces", tmp_path / "empty_dir_missing", tmp_path / "out", "not a folder")


# ---------------------------------------------------------------- anime

def test_anime_tag_vocabulary_and_classes(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    tags = ["aqua hair aqua eyes", "blue hair red eyes", "aqua hair red eyes", "pink hair blue eyes"]
    for i in range(len(tags)):
        save_image(src / "images" / f"{i}.jpg", (96, 96), seed=i)
    corrupt(src / "images" / "3.jpg")
    (src / "tags.csv").write_text("".join(f"{i},{t}\n" for i, t in enumerate(tags)))
    assert convert("anime", src, out) == 0
    index = index_of(out)
    assert index["tags"] == {"hair": ["aqua", "blue", "pink"], "eye": ["aqua", "blue", "red"]}
    assert len(index["class_names"]) == 9 and index["class_names"][5] == "blue hair red eyes"
    assert counts(out) == {"train": 3} and index["skipped"]["files"] == ["images/3.jpg"]
    got = samples(out, "train")
    assert [s["cls"] for s in got] == [0, 5, 2]  # hair_index * 3 + eye_index
    assert [index["class_names"][s["cls"]] for s in got] == tags[:3]
    assert got[1]["json"]["tags"] == {"hair": "blue", "eye": "red"}
    assert got[0]["image"].size == (64, 64)


def test_anime_malformed_tags_are_rejected(tmp_path, capsys):
    src = tmp_path / "raw"
    save_image(src / "images" / "0.jpg", (64, 64))
    (src / "tags.csv").write_text("0,aqua hair aqua eyes\n1,smiling\n")
    assert_rejected(capsys, "anime", src, tmp_path / "out", "tags.csv:2", "hair")
    (src / "tags.csv").unlink()
    assert_rejected(capsys, "anime", src, tmp_path / "out", f"'{src / 'tags.csv'}'")


# ---------------------------------------------------------------- maps

def test_maps_cyclegan_layout_writes_two_shard_sets(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    for folder, n in {"trainA": 2, "trainB": 3, "testA": 1, "testB": 1}.items():
        for i in range(n):
            save_image(src / folder / f"{i + 1}_{folder[-1]}.jpg", (80, 80), seed=i)
    corrupt(src / "trainB" / "9_B.jpg")
    assert convert("maps", src, out, "--size", "32") == 0
    assert not (out / "index.json").exists()
    assert counts(out / "A") == {"train": 2, "test": 1} and counts(out / "B") == {"train": 3, "test": 1}
    assert index_of(out / "A")["domain"] == "A" and index_of(out / "B")["skipped"]["files"] == ["trainB/9_B.jpg"]
    assert load_info(DataConfig(root=str(out / "B"))).counts == {"train": 3, "test": 1}  # a normal data.root
    assert samples(out / "A", "train")[0]["image"].size == (32, 32)


def test_maps_pix2pix_layout_splits_halves(tmp_path):
    src, out = tmp_path / "raw", tmp_path / "out"
    for folder, names in {"train": ["1", "2"], "val": ["1"]}.items():
        for name in names:
            pair = Image.new("RGB", (200, 100), "red")
            pair.paste(Image.new("RGB", (100, 100), "blue"), (100, 0))
            (src / folder).mkdir(parents=True, exist_ok=True)
            pair.save(src / folder / f"{name}.jpg")
    assert convert("maps", src, out, "--size", "80") == 0
    assert counts(out / "A") == {"train": 2, "test": 1} == counts(out / "B")  # val/ is the test split
    a, b = samples(out / "A", "train"), samples(out / "B", "train")
    assert [s["key"] for s in a] == [s["key"] for s in b] == ["1", "2"]
    assert a[0]["ext"] == "jpg" and a[0]["image"].size == (80, 80)  # larger than 64 px: JPEG
    red, blue = np.asarray(a[0]["image"]).mean((0, 1)), np.asarray(b[0]["image"]).mean((0, 1))
    assert red[0] > 200 > red[2] and blue[2] > 200 > blue[0]


def test_maps_incomplete_layout_is_rejected(tmp_path, capsys):
    src = tmp_path / "raw"
    save_image(src / "trainA" / "1_A.jpg")
    save_image(src / "trainB" / "1_B.jpg")
    save_image(src / "testA" / "1_A.jpg")
    assert_rejected(capsys, "maps", src, tmp_path / "out", f"'{src / 'testB'}/'", "CycleGAN layout",
                    "pix2pix layout")
    (src / "testB").mkdir()
    assert_rejected(capsys, "maps", src, tmp_path / "out", "testB", "no images")


# ---------------------------------------------------------------- digits-m

def test_digits_m_is_seeded_rgb_with_the_digits_split(tmp_path, digits):
    out = tmp_path / "digits-m"
    assert convert("digits-m", None, out) == 0
    index = index_of(out)
    assert index["channels"] == 3 and index["image_size"] == 32 and counts(out) == counts(digits)
    for split in ("test",):
        plain = {s["key"]: s["cls"] for s in samples(digits, split)}
        blended = samples(out, split)
        assert {s["key"]: s["cls"] for s in blended} == plain  # same samples, same labels
        assert blended[0]["image"].mode == "RGB" and blended[0]["json"]["photo"] in ("china.jpg", "flower.jpg")
        colours = np.asarray(blended[0]["image"]).reshape(-1, 3).std(0)
        assert colours.max() > 5  # a photo patch, not a grey digit
    assert convert("digits-m", None, tmp_path / "again") == 0
    assert (tmp_path / "again" / "index.json").read_text() == (out / "index.json").read_text()
    again = samples(tmp_path / "again", "test")
    assert all(np.array_equal(np.asarray(a["image"]), np.asarray(b["image"])) for a, b in zip(again, blended))


# ---------------------------------------------------------------- failure part-way

def test_failure_part_way_leaves_no_half_shard_and_no_stale_index(tmp_path, monkeypatch):
    import shards.common

    src, out = tmp_path / "raw", tmp_path / "out"
    course_layout(src, {"train": list(range(7)), "test": [1]})
    assert convert("mnistm", src, out, "--samples-per-shard", "2") == 0  # an earlier, complete run
    real_load, calls = shards.common.load_image, []

    def dies_on_the_fourth(path, mode):
        calls.append(path)
        if len(calls) == 4:
            assert [p.name for p in out.glob(".*partial")] == [".train-000001.tar.partial"]  # half written
            raise KeyboardInterrupt  # the user gives up half way through a shard
        return real_load(path, mode)

    monkeypatch.setattr(shards.common, "load_image", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        convert("mnistm", src, out, "--samples-per-shard", "2")
    assert not list(out.glob(".*partial"))  # the shard being written is gone
    assert not (out / "index.json").exists()  # the old index no longer describes the shards
    assert sorted(p.name for p in out.glob("*.tar")) == ["test-000000.tar", "train-000000.tar",
                                                         "train-000001.tar", "train-000002.tar",
                                                         "train-000003.tar"]
