"""Checkpoints of a run: save, load, rotate, roll back, and the checks made at each of them.

    run.save(step, meta, nets)  /  run.resume()      (the loops, through distgen/loops/common.py's Run)

A checkpoint is RUN_DIR/checkpoints/step_<N>/: Accelerate's `save_state` (optimizers, schedulers,
scaler, RNG states, registered objects), every net written by its own name as <net>.safetensors
(through Accelerate's save/load-state pre-hooks, instead of Accelerate's model_<i> numbering, which
follows prepare order), per-rank state as <name>_rank<R>.pt, and meta.json last. Older checkpoints that
hold model.safetensors / model_<i>.safetensors still load (their meta.json names those files).

Writing: into .step_<N>.tmp, every file fsynced, then renamed to step_<N> and `latest` moved to it, so
a kill mid-save leaves the previous checkpoint as `latest`. A full disk surfaces from safetensors
(SafetensorError), torch.save (RuntimeError) or plain writes (OSError); every rank reports whether its
writes succeeded and all stop together with one TrainingError that names the intact previous checkpoint.

Checks: before each save the replicas' parameter fingerprints are gathered (ranks.json); drift names the
parameter. meta.json records the topology (world size, machines, data.num_workers, mixed precision);
resuming under another one is refused with what changed, because the stream position is
world size x workers dependent: run.accept_new_data_order=true (launch/train.py
--accept-new-data-order) continues with a new data order. A DeepSpeed checkpoint at another world size
is refused even then (ZeRO's optimizer state is one file per rank). Under DeepSpeed <net>.safetensors
holds the fp32 master weights (distgen/loops/zero.py), also in a bf16/fp16 run.

Rollback: after resuming from step S, checkpoints of later steps belong to an abandoned branch; they
move to RUN_DIR/abandoned/... before training, so rotation and `latest` only ever see the live branch.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from distgen.data.workers import resolve_workers
from distgen.errors import ConfigError, TrainingError
from distgen.loops.run_dir import checkpoint_steps
from distgen.loops.zero import master_state_dict

ACCEPT = "run.accept_new_data_order=true (or --accept-new-data-order)"


def topology(acc, cfg) -> dict:
    """What the stream position and the numerics of a checkpoint depend on."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes) or acc.num_processes)
    return {"world_size": acc.num_processes, "machines": max(1, acc.num_processes // max(local, 1)),
            "num_workers": resolve_workers(cfg.data.num_workers), "mixed_precision": str(acc.mixed_precision)}


def topology_changes(saved: dict, now: dict) -> list[str]:
    """'world size 2 -> 1', ... for every recorded fact that differs (older checkpoints record fewer).
    The number of machines is recorded but not compared: at the same world size every rank reads the
    same data and state whichever machine it runs on."""
    names = {"world_size": "world size", "num_workers": "data.num_workers", "mixed_precision": "mixed precision"}
    recorded = saved.get("topology", {"world_size": saved["world_size"]} if "world_size" in saved else {})
    return [f"{names[k]} {recorded[k]} -> {now[k]}" for k in names if k in recorded and recorded[k] != now[k]]


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder` and the folders themselves to the disk."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpointer:
    def __init__(self, run_dir: Path, cfg, acc, per_rank: dict):
        self.ckdir, self.cfg, self.acc, self.per_rank = run_dir / "checkpoints", cfg, acc, per_rank
        self.run_dir = run_dir
        self.topology = topology(acc, cfg)
        self._names: list[str] = []  # net names in prepare order, from the loop's checkpoint meta
        acc.register_save_state_pre_hook(self._save_nets_by_name)
        acc.register_load_state_pre_hook(self._load_nets_by_name)

    # -- nets by name (Accelerate hooks) ------------------------------------------------------

    def _by_name(self) -> bool:
        return self.acc.distributed_type != DistributedType.DEEPSPEED  # DeepSpeed writes its own engine files

    def _save_nets_by_name(self, models, weights, output_dir) -> None:
        if not self._by_name() or len(self._names) != len(models):
            return
        if self.acc.is_main_process:
            for name, model in zip(self._names, models):
                state = self.acc.unwrap_model(model, keep_torch_compile=False).state_dict()
                save_file({k: v.detach().contiguous() for k, v in state.items()},
                          os.path.join(output_dir, f"{name}.safetensors"))
        weights.clear()  # written above; Accelerate writes no model_<i> files

    def _load_nets_by_name(self, models, input_dir) -> None:
        meta = json.loads((Path(input_dir) / "meta.json").read_text())
        names = list(meta.get("family_nets", {}))
        files = [Path(input_dir) / meta["family_nets"][n] for n in names]
        if (not self._by_name() or len(names) != len(models)
                or not all(f.name == f"{n}.safetensors" for n, f in zip(names, files))):
            return  # an older checkpoint (model_<i> files): Accelerate loads it as it wrote it
        for model, file in zip(models, files):
            self.acc.unwrap_model(model, keep_torch_compile=False).load_state_dict(load_file(str(file)))
        models.clear()

    # -- load --------------------------------------------------------------------------------

    def load(self, ckpt: Path) -> None:
        """Load `ckpt` into what the loop prepared and registered; refuse another topology unless accepted."""
        meta = json.loads((ckpt / "meta.json").read_text())
        changes = topology_changes(meta, self.topology)
        saved_world = meta.get("topology", {}).get("world_size", meta.get("world_size"))
        if self.acc.state.deepspeed_plugin is not None and saved_world not in (None, self.topology["world_size"]):
            # checked before anything is loaded or announced: DeepSpeed would fail inside load_state
            raise ConfigError(
                f"checkpoint {ckpt} was written by DeepSpeed on {saved_world} processes and this run has "
                f"{self.topology['world_size']}: ZeRO splits the optimizer state into one file per rank and "
                f"cannot load it on another number of ranks ({ACCEPT} does not change that). Relaunch with "
                f"--num_processes {saved_world} (over all machines), or score its weights with launch/evaluate.py")
        if changes:
            if not self.cfg.run.accept_new_data_order:
                raise ConfigError(
                    f"checkpoint {ckpt} was written under another topology: {', '.join(changes)}. The data "
                    f"stream position depends on world size x data.num_workers, so resuming would read a "
                    f"different data order (and another precision changes the numerics). Relaunch as it was, "
                    f"or continue anyway with {ACCEPT}")
            if self.acc.is_main_process:
                tqdm.write(f"note: resuming under a new topology ({', '.join(changes)}): the data order from "
                           f"here on differs from an uninterrupted run (accepted with run.accept_new_data_order)")
        self._names = list(meta.get("family_nets", {}))
        self.acc.load_state(str(ckpt))
        for name, obj in self.per_rank.items():
            saved = sorted(ckpt.glob(f"{name}_rank*.pt"))
            if saved:  # the same rank's state; resumed on more processes, a saved rank's state modulo
                mine = ckpt / f"{name}_rank{self.acc.process_index % len(saved)}.pt"
                obj.load_state_dict(torch.load(mine, map_location="cpu", weights_only=True))
            elif self.acc.is_main_process:
                tqdm.write(f"warning: {ckpt} holds no {name}_rank*.pt (an older checkpoint); "
                           f"the {name} state (e.g. CycleGAN's image pools) starts empty")

    # -- roll back ---------------------------------------------------------------------------

    def roll_back(self, ckpt: Path, aside: Path) -> list[str]:
        """Move checkpoints of steps after `ckpt`'s to `aside`; point `latest` at the live branch (main only)."""
        step = int(json.loads((ckpt / "meta.json").read_text())["step"])
        later = [p for s, p in checkpoint_steps(self.ckdir).items() if s > step]
        later += [p for p in self.ckdir.glob("step_*") if not (p / "meta.json").exists() and p.is_dir()]
        if later:
            (aside / "checkpoints").mkdir(parents=True, exist_ok=True)
            for path in later:
                shutil.move(str(path), aside / "checkpoints" / path.name)
        live = checkpoint_steps(self.ckdir)
        if ckpt.parent.resolve() == self.ckdir.resolve():
            self._point_latest(ckpt.name)
        elif live:
            self._point_latest(live[max(live)].name)
        return [f"{len(later)} later checkpoints ({', '.join(p.name for p in later)})"] if later else []

    def _point_latest(self, name: str) -> None:
        link = self.ckdir / ".latest.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(name)
        os.replace(link, self.ckdir / "latest")

    # -- save --------------------------------------------------------------------------------

    def save(self, step: int, meta: dict, nets: dict | None) -> Path:
        acc, ckdir = self.acc, self.ckdir
        final, tmp = ckdir / f"step_{step}", ckdir / f".step_{step}.tmp"
        self._names = list(meta.get("family_nets", {}))
        if acc.is_main_process:
            for stale in ckdir.glob(".step_*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        acc.wait_for_everyone()
        meta = {"step": step, **meta, "topology": self.topology}
        error = None
        try:
            acc.save_state(str(tmp))
            for name, obj in self.per_rank.items():
                torch.save(obj.state_dict(), tmp / f"{name}_rank{acc.process_index}.pt")
            if acc.state.deepspeed_plugin is not None and nets:
                # DeepSpeed writes engine shards; also write each net's full weights by name for evaluate.py:
                # the fp32 masters the optimizer steps, not the engine's bf16/fp16 copies (distgen/loops/zero.py)
                for name, net in nets.items():
                    weights = master_state_dict(acc, net)  # a collective under ZeRO: every rank calls it
                    if acc.is_main_process:
                        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / f"{name}.safetensors"))
        except (OSError, RuntimeError, SafetensorError) as exc:  # what a full disk raises, library by library
            error = exc
        # every rank learns whether any rank failed, so all stop together (no rank left in a collective)
        failed = bool(acc.gather(torch.tensor([int(error is not None)], device=acc.device)).sum().item())  # host sync, once per checkpoint
        if not failed:
            try:
                acc.wait_for_everyone()
                if acc.is_main_process:
                    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
                    fsync_tree(tmp)
                    if final.exists():
                        shutil.rmtree(final)
                    os.replace(tmp, final)
                    self._point_latest(final.name)
                    fsync_dir(ckdir)
                    self._rotate()
            except (OSError, RuntimeError, SafetensorError) as exc:
                error, failed = exc, True
        if failed:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            latest = ckdir / "latest"
            previous = latest.resolve().name if (latest / "meta.json").exists() else "none"
            why = ((getattr(error, "strerror", None) or f"{type(error).__name__}: {error}") if error
                   else "a write failed on another rank")
            try:
                free = f"; {shutil.disk_usage(ckdir).free / 2**20:.1f} MiB free there"
            except OSError:
                free = ""
            raise TrainingError(f"could not write checkpoint step_{step} in {ckdir}: {why}{free}. The previous "
                                f"checkpoint ({previous}) is intact; free space and rerun with --resume auto") from None
        acc.wait_for_everyone()
        return final

    def _rotate(self) -> None:
        keep = self.cfg.run.keep_last
        steps = list(checkpoint_steps(self.ckdir).values())
        if keep > 0:
            for path in steps[:-keep]:
                shutil.rmtree(path)

    # -- replicas ----------------------------------------------------------------------------

    def check_ranks(self, nets: dict, step: int | None = None) -> bool:
        """Gather a fingerprint of every parameter from every rank; write ranks.json; warn naming what drifted.

        DDP keeps replicas identical only if every rank ran the same steps; this catches the silent
        failures (a skipped step on one rank, unsynced parameters) at every checkpoint and at the end."""
        acc = self.acc
        gen = torch.Generator().manual_seed(0)
        rows, names = [], []
        for name in sorted(nets):
            for pname, p in acc.unwrap_model(nets[name], keep_torch_compile=False).named_parameters():
                w = torch.rand(p.numel(), generator=gen, dtype=torch.float64).to(p.device)
                flat = p.detach().double().flatten()
                rows.append(torch.stack([flat.sum(), flat.square().sum(), (flat * w).sum()]))
                names.append(f"{name}.{pname}")
        mine = torch.stack(rows)  # [params, 3]
        every_rank = acc.gather(mine[None]).cpu()  # [ranks, params, 3]
        scale = every_rank[0].abs().amax(dim=1).clamp_min(1e-12)  # per parameter
        per_param = ((every_rank - every_rank[0]).abs().amax(dim=(0, 2)) / scale)
        drift = float(per_param.max())
        in_sync = drift <= 1e-6
        drifted = [names[i] for i in torch.nonzero(per_param > 1e-6).flatten().tolist()]
        if acc.is_main_process:
            (self.run_dir / "ranks.json").write_text(json.dumps(
                {"step": step, "world_size": acc.num_processes, "relative_drift": drift, "in_sync": in_sync,
                 "drifted": drifted, "fingerprints": every_rank.flatten(1).tolist()}))
            if not in_sync:
                at = f" at step {step}" if step is not None else ""
                tqdm.write(f"warning: parameters differ between ranks{at} (relative drift {drift:.3g}): "
                           f"{', '.join(drifted[:5])}{' ...' if len(drifted) > 5 else ''}; see ranks.json")
        return in_sync
