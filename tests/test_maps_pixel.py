"""Maps (pix2pix's paired release): the converter keeps each photo with its own map, and the paired pixel
metrics (`launch/evaluate.py RUN --metrics pixel`: photo->map RMSE and pixel accuracy) by hand, through
evaluate.py and in compare.py's reading of a run. Tiny fixtures in the raw layout, at 32 px."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import launch_module
from distgen import config, recipes
from distgen.data import eval_batches, load_info
from distgen.errors import ConfigError
from distgen.evaluation.pixel import pixel_scores, translation_pixels
from distgen.families import FAMILIES

MAP_OFFSET = 10  # each map is its photo with this added to the red channel of the top half of the rows


def photo_and_map(seed: int) -> tuple[np.ndarray, np.ndarray]:
    photo = np.random.default_rng(seed).integers(20, 200, (32, 32, 3), dtype=np.uint8)
    map_ = photo.copy()
    map_[:16, :, 0] += MAP_OFFSET
    return photo, map_


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    """A tiny pix2pix maps release in its raw layout (train/, val/: photo | map side by side), converted by
    the real converter at 32 px, where the shards keep the pixels exactly (.npy)."""
    src, out = tmp_path_factory.mktemp("raw") / "maps", tmp_path_factory.mktemp("shards") / "maps"
    for folder, n in {"train": 2, "val": 5}.items():
        (src / folder).mkdir(parents=True)
        for i in range(n):
            photo, map_ = photo_and_map(100 * (folder == "val") + i)
            Image.fromarray(np.concatenate([photo, map_], axis=1)).save(src / folder / f"{i + 1}.png")
    from shards.__main__ import main

    assert main(["maps", "--src", str(src), "--out", str(out), "--size", "32"]) == 0
    return out


def maps_cyclegan(root, seed: int = 0):
    """A freshly initialised tiny CycleGAN on a maps folder (config and data info as a run has them)."""
    cfg = recipes.from_dict({"family": "cyclegan", "model": {"width": 4, "n_blocks": 1, "d_layers": 2},
                             "data": {"domain_a": str(root / "A"), "domain_b": str(root / "B")}})
    infos = {k: load_info(dataclasses.replace(cfg.data, root=str(root / k))) for k in ("A", "B")}
    torch.manual_seed(seed)
    return cfg, FAMILIES["cyclegan"](cfg, infos)


class AddToRed(nn.Module):
    """A translator that knows the fixture's map: the photo with MAP_OFFSET added to the top half's red."""

    def forward(self, x):
        x = x.clone()
        x[:, 0, : x.shape[2] // 2] += MAP_OFFSET / 127.5
        return x


def test_pixel_scores_by_hand():
    real = torch.randint(0, 240, (2, 3, 8, 8), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    for fake, threshold, rmse, acc in ((real, 5, 0.0, 1.0),  # an image against itself
                                       (real + 3, 5, 3.0, 1.0), (real + 5, 5, 5.0, 0.0),  # |d| < 5 is strict
                                       (real + 5, 6, 5.0, 1.0), (real.int() - 7, 5, 7.0, 0.0)):
        r, a = pixel_scores(fake, real, threshold)
        assert r.tolist() == pytest.approx([rmse] * 2) and a.tolist() == pytest.approx([acc] * 2)
    half = real.clone()
    half[:, 0, :4] += 10  # red off by 10 in half of the pixels: 1/6 of the values
    r, a = pixel_scores(half, real)
    assert r.tolist() == pytest.approx([math.sqrt(100 / 6)] * 2) and a.tolist() == pytest.approx([0.5] * 2)
    one_channel = real.clone()
    one_channel[0, 2, 0, 0] += 5  # one channel out is the whole pixel out
    assert pixel_scores(one_channel, real)[1][0].item() == pytest.approx(1 - 1 / 64)


def test_maps_pairs_survive_conversion_and_are_scored_pair_by_pair(maps):
    from distgen.data.decoding import Skips
    from distgen.data.tar import read_shard

    for split, n in (("train", 2), ("test", 5)):
        sides = [[(s["__key__"], json.loads(s["json"])["file"]) for url in load_info(
            config.DataConfig(root=str(maps / k))).splits[split] for s in read_shard(url, Skips(0.0, "test"))]
            for k in ("A", "B")]
        assert sides[0] == sides[1] and len(sides[0]) == n  # same key, same source image, same order
    cfg, family = maps_cyclegan(maps)
    family.nets["G"].nets["AB"] = AddToRed()
    # every photo against its own map (different for each pair): nothing off
    assert translation_pixels(family) == {"rmse_AB": 0.0, "pixel_acc_AB": 1.0, "num_pairs": 5,
                                          "pixel_threshold": 5.0, "pixel_size": 32}
    family.nets["G"].nets["AB"] = nn.Identity()  # the photo as its own map: off by MAP_OFFSET in 1/6 of the values
    out = translation_pixels(family, num_samples=3)
    assert out["rmse_AB"] == pytest.approx(math.sqrt(MAP_OFFSET ** 2 / 6), abs=1e-6)
    assert out["pixel_acc_AB"] == 0.5 and out["num_pairs"] == 3
    assert translation_pixels(family, threshold=MAP_OFFSET + 1)["pixel_acc_AB"] == 1.0


def test_pixel_metrics_refuse_unpaired_maps(tmp_path):
    """The CycleGAN layout (trainA/ testA/ ...) has no pairs: the error names the split and the fix."""
    src = tmp_path / "raw"
    for folder in ("trainA", "trainB", "testA", "testB"):
        (src / folder).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(photo_and_map(i)[folder[-1] == "B"]).save(src / folder / f"{i + 1}_{folder[-1]}.png")
    from shards.__main__ import main

    assert main(["maps", "--src", str(src), "--out", str(tmp_path / "maps"), "--size", "32"]) == 0
    _, family = maps_cyclegan(tmp_path / "maps")
    with pytest.raises(ConfigError, match=r"split 'test' .*CycleGAN layout.*python -m shards maps"):
        translation_pixels(family)


def test_evaluate_pixel_writes_the_metrics_of_a_run(maps, tmp_path, capsys):
    """launch/evaluate.py RUN --metrics pixel on a run dir holding a freshly initialised tiny CycleGAN:
    eval/step_<N>.json gets rmse_AB and pixel_acc_AB, equal to the numbers computed here by hand from
    the checkpoint's G_AB and the two test splits; compare.py reads them as eval/<key>."""
    from safetensors.torch import save_file

    from distgen.checkpoint import info_to_meta
    from distgen.evaluation.inception import to_uint8
    from distgen.evaluation.runs import load_run_dir

    cfg, family = maps_cyclegan(maps, seed=3)
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints" / "latest"
    ckpt.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config.dump(cfg))
    for name, net in family.nets.items():
        save_file(net.state_dict(), str(ckpt / f"{name}.safetensors"))
    (ckpt / "meta.json").write_text(json.dumps({
        "step": 7, "family_nets": {n: f"{n}.safetensors" for n in family.nets}, "custom": {},
        "data_info": {k: info_to_meta(i) for k, i in family.info.items()}}))
    evaluate = launch_module("launch/evaluate.py")
    assert evaluate.main([str(run_dir), "--metrics", "pixel", "--pixel-threshold", "20"]) == 0, capsys.readouterr()
    written = json.loads((run_dir / "eval" / "step_7.json").read_text())

    photos, maps_ = (next(eval_batches(i.splits["test"], 10, i))["image"] for i in family.info.values())
    with torch.no_grad():
        fake = to_uint8(family.nets["G"](photos, "AB")).double()
    diff = fake - to_uint8(maps_).double()
    rmse = diff.pow(2).mean((1, 2, 3)).sqrt().mean().item()
    acc = (diff.abs().amax(1) < 20).double().mean().item()
    assert written["rmse_AB"] == pytest.approx(rmse, abs=1e-5) and written["pixel_acc_AB"] == pytest.approx(acc, abs=1e-6)
    assert rmse > 10 and 0 < acc < 1  # an untrained G: far from the maps, so the numbers say something
    assert written["num_pairs"] == 5 and written["pixel_threshold"] == 20 and written["step"] == 7
    final = load_run_dir(run_dir).final
    assert final["eval/rmse_AB"] == written["rmse_AB"] and final["eval/pixel_acc_AB"] == written["pixel_acc_AB"]
