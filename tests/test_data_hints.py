"""What a new user sees when the data is not there yet: the key to fix, the converter to run, `--help`.

Each of these named the wrong thing before: a missing DANN target was reported as `data.root` with the digits
converter, a missing data/celeba64 was pointed at `shards digits`, `python -m shards --help` left out `index`,
and a set without a test split said only that the split has no shards.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import json

import pytest

from conftest import TINY_CLS, main_in_process
from distgen.data import index as data_index
from shards.__main__ import FORMATS, main as shards_main


def train_error(*argv: str) -> str:
    result = main_in_process("launch/train.py", list(argv))
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return lines[-1]


def test_missing_dann_target_names_data_target_and_its_converter(digits, tmp_path):
    target = tmp_path / "data" / "digits-m"
    err = train_error("recipes/dann_digits.yaml", f"data.source={digits}", f"data.target={target}",
                      f"run.dir={tmp_path / 'run'}")
    assert f"data.target '{target}'" in err and "data.root" not in err
    assert f"`python -m shards digits-m --out {target}`" in err


@pytest.mark.parametrize("root, key, command", [
    ("data/celeba64", "data.root", "`python -m shards celeba --src RAW_DIR --out data/celeba64`"),
    ("data/mnistm", "data.target", "`python -m shards mnistm --src RAW_DIR --out data/mnistm`"),
    ("data/maps/B", "data.domain_b", "`python -m shards maps --src RAW_DIR --out data/maps`"),
    ("data/my-cats", "data.root", "`python -m shards folder --src IMAGES --out data/my-cats`"),
])
def test_missing_folder_names_the_key_and_the_converter_its_name_suggests(tmp_path, monkeypatch, root, key, command):
    monkeypatch.chdir(tmp_path)  # none of these folders exists here
    from distgen.config import DataConfig

    field = key.split(".")[1]
    cfg = DataConfig(**({"root": root} if field == "root" else {field: root, "root": root}))
    with pytest.raises(data_index.DataError) as exc:
        data_index.load_info(cfg)
    message = str(exc.value)
    assert message.startswith(f"{key} '{root}'") and command in message
    assert "shards digits" not in message


def test_converter_list_of_the_hint_is_the_shards_command_s():
    assert list(data_index.CONVERTERS) == list(FORMATS)
    takes_src = {name for name, module in FORMATS.items()
                 if "--src" in inspect.getsource(module) or "add_source_arguments" in inspect.getsource(module)}
    assert set(data_index.EMBEDDED) == set(FORMATS) - takes_src


def test_shards_help_lists_index():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        shards_main(["--help"])
    choices = out.getvalue().split("one of:", 1)[1].split("\n    celeba ")[0]  # before the per-command lines
    assert {"index", "folder", "celeba", "digits-m"} <= {c.strip() for c in choices.split(",")}


def test_a_set_without_test_split_points_at_the_index_flag_and_data_eval_split(tmp_path, digits):
    only_train = tmp_path / "only-train"
    only_train.mkdir()
    index = json.loads((digits / "index.json").read_text())
    index["splits"] = {"train": {**index["splits"]["train"],
                                 "shards": [str(digits / s) for s in index["splits"]["train"]["shards"]]}}
    (only_train / "index.json").write_text(json.dumps(index))
    err = train_error("recipes/classifier_digits.yaml", *TINY_CLS, f"data.root={only_train}",
                      f"run.dir={tmp_path / 'run'}", "train.steps=2")
    assert "data.eval_split: split 'test' has no shards" in err
    assert f"python -m shards index {digits} --split test=" in err and "data.eval_split=train" in err
