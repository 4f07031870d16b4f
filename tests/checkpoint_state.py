"""Everything a checkpoint holds, as named tensors, for the exact-resume tests: every net's weights, the
optimizers' moments and step counts, the schedulers, the scaler, the RNG states and every registered object
(train state, EMA) and per-rank file. Two CPU runs that did the same steps hold equal values bit for bit."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file


def _flatten(prefix: str, obj, out: dict) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj.detach().cpu()
    elif isinstance(obj, np.ndarray):
        out[prefix] = torch.from_numpy(np.ascontiguousarray(obj))
    elif isinstance(obj, bool | int | float):
        out[prefix] = torch.tensor(obj)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(f"{prefix}.{key}", value, out)
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _flatten(f"{prefix}.{i}", value, out)


def checkpoint_state(ckpt: Path) -> dict[str, torch.Tensor]:
    """file.key.subkey... -> tensor, for every file of checkpoints/step_<N> but meta.json."""
    out: dict[str, torch.Tensor] = {}
    for path in sorted(Path(ckpt).iterdir()):
        if path.suffix == ".safetensors":
            _flatten(path.name, load_file(str(path)), out)
        elif path.suffix in (".bin", ".pkl", ".pt"):
            _flatten(path.name, torch.load(path, map_location="cpu", weights_only=False), out)
    return out


def assert_same_checkpoint(a: Path, b: Path, expect: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Every tensor of checkpoint `a` equals `b`'s (torch.equal: the same values, dtypes and shapes); the two
    hold the same keys, among them the files named in `expect` (so a test says what it relies on)."""
    sa, sb = checkpoint_state(a), checkpoint_state(b)
    assert sorted(sa) == sorted(sb), set(sa) ^ set(sb)
    files = {key.split(".", 2)[0] + "." + key.split(".", 2)[1] for key in sa}
    for name in expect:
        assert name in files, f"{a} holds no {name} (it holds {sorted(files)})"
    differ = [key for key in sa if not (sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]))]
    assert differ == [], f"{len(differ)} of {len(sa)} checkpointed tensors differ: {differ[:8]}"
    return sa


def assert_resumed_from(run_dir: Path, ckpt: Path, output: str) -> None:
    """The resumed session said which checkpoint it loaded and started at that checkpoint's step (run.json):
    a resume that silently restarted from step 0 would reproduce a straight run's weights."""
    step = json.loads((ckpt / "meta.json").read_text())["step"]
    assert f"resumed from {ckpt}" in output, output[-2000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["resumed_from"] == str(ckpt) and record["first_step"] == step, record


def optimizer_steps(ckpt: Path) -> dict[str, int]:
    """net -> how many times its optimizer stepped (Adam's per-parameter `step`, the same for all of them):
    optimizer.bin, optimizer_1.bin, ... follow prepare order, which is meta.json's family_nets order."""
    nets = list(json.loads((Path(ckpt) / "meta.json").read_text())["family_nets"])
    steps = {}
    for i, net in enumerate(nets):
        state = torch.load(Path(ckpt) / ("optimizer.bin" if i == 0 else f"optimizer_{i}.bin"), map_location="cpu",
                           weights_only=False)["state"]
        counts = {int(s["step"]) for s in state.values()}
        assert len(counts) == 1, f"{net}'s parameters stepped different numbers of times: {counts}"
        steps[net] = counts.pop()
    return steps
