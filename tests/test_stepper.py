"""The training step both loops share (distgen/loops/stepper.py): no host sync per step, the device-side
skip of non-finite steps, true accumulation in the single-objective loop, the fp16 gradient-penalty scale
under a real GradScaler, and the statistics path (distgen/stats.py) on one device and robust to names
reported on some ranks only."""
from __future__ import annotations

import copy
import json
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import ROOT, TINY_CLS, TINY_GAN, free_port, metrics, train
from distgen import recipes, stats
from distgen.data import DataInfo
from distgen.families import FAMILIES
from distgen.loops.guard import Guard

DIGITS = DataInfo(32, 1, tuple("0123456789"), (), {}, {})
SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu")
# ops that read a device tensor back to the host (each a CUDA sync), seen below Python by a dispatch mode
READS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::equal", "aten::is_nonzero", "aten::masked_select"}


class _DeviceReads(TorchDispatchMode):
    """Counts every op that reads back on CUDA: scalar reads, data-dependent shapes (nonzero, indexing with a
    boolean mask), torch.equal, and copies to the CPU from another device (on the CPU the named ops are what
    is counted)."""

    def __init__(self, calls: Counter):
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name in READS:
            self.calls[name] += 1
        elif name in ("aten::index", "aten::index_put", "aten::index_put_") and any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]):
            self.calls[f"{name} with a boolean mask"] += 1  # its size is the mask's count: read back
        elif name in ("aten::_to_copy", "aten::copy_") and isinstance(args[0], torch.Tensor):
            src = args[1] if name == "aten::copy_" else args[0]
            dst = args[0].device if name == "aten::copy_" else torch.device(kwargs.get("device") or src.device)
            if isinstance(src, torch.Tensor) and dst.type == "cpu" and src.device.type != "cpu":
                self.calls[f"{name} to cpu"] += 1
        return func(*args, **kwargs)




# -- statistics: one device, names on some ranks only ------------------------------------------------


def test_statistics_end_on_the_device_of_the_reported_tensors():
    """A CUDA loss beside a Python float (the old nonfinite_skipped) or a CPU tensor must not be stacked as
    they are (today's crash at the first log on CUDA); the meta device stands in for the GPU."""
    stats.collect(), stats.collect_counts()  # nothing left over from other tests
    stats.report("D/real", torch.ones(4, device="meta"))
    stats.report("nonfinite_skipped", 0.0)
    stats.report("lr", torch.tensor(0.5))  # a CPU tensor
    stats.count("data/skipped", 0)
    means, counts = stats.collect(), stats.collect_counts()
    values = list(means.values()) + list(counts.values())
    assert {v.device.type for v in values} == {"meta"}
    assert torch.stack(values).shape == (4,)  # what the log's single reduction stacks
    stats.report("D/real", torch.ones(4, device="meta"))
    stats.report("nonfinite_skipped", 1.0)
    packed = stats.pack("meta")
    assert packed.device.type == "meta" and packed.shape == (4,)  # (sum, reports) per name


def test_a_name_reported_several_times_never_enters_one_foreach_add_twice(monkeypatch):
    """WGAN-GP's critic reports its terms n_critic times per iteration. On CUDA a foreach kernel updates its
    tensors in parallel, so the same accumulator twice in one list would race and lose additions: each
    repetition goes into its own call, and the totals are still exact."""
    stats.collect(), stats.collect_counts()
    real = torch._foreach_add_
    lists = []

    def checked(slots, values):
        lists.append([id(t) for t in slots])
        return real(slots, values)

    monkeypatch.setattr(torch, "_foreach_add_", checked)
    for i in range(5):  # five critic steps, then the generator's
        stats.report("D/real", torch.tensor(float(i)))
        stats.report("D(x)", torch.full((4,), float(i)))
    stats.report("G/adv", torch.tensor(10.0))
    stats.flush()
    assert len(lists) == 5 and all(len(set(ids)) == len(ids) for ids in lists), lists
    means = stats.collect()
    assert means["D/real"].item() == 2.0 and means["D(x)"].item() == 2.0 and means["G/adv"].item() == 10.0


def _ranks_report(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    stats.report("loss", torch.tensor(1.0 + 2 * rank))  # both ranks
    if rank == 0:
        stats.report("only_on_rank0", torch.tensor([2.0, 4.0]))
        stats.report("only_on_rank0", 6.0)
    else:
        stats.count("only_counted_on_rank1", torch.tensor([2.0, 3.0]))

    def sum_over_ranks(t):
        dist.all_reduce(t)
        return t

    def gather(obj):
        everyone = [None, None]
        dist.all_gather_object(everyone, obj)
        return everyone

    means, counts = stats.reduce(torch.device("cpu"), sum_over_ranks, gather)
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"means": means, "counts": counts}, f)
    dist.destroy_process_group()


def test_a_name_reported_on_some_ranks_only_is_reduced_on_every_rank(tmp_path):
    """Two gloo processes: rank 0 reports a name rank 1 never does (and rank 1 counts one of its own).
    Reducing by position would pair different names or hang; every rank must get the same, right values."""
    ctx = torch.multiprocessing.start_processes(_ranks_report, args=(free_port(), str(tmp_path)), nprocs=2,
                                                join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two ranks did not finish reducing their statistics within 120 s (a hang)")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1]
    assert results[0]["means"] == {"loss": 2.0, "only_on_rank0": 4.0}  # (1 + 3) / 2; (2 + 4 + 6) / 3: each element one value
    assert results[0]["counts"] == {"only_counted_on_rank1": 5.0}


# -- no host sync per step ----------------------------------------------------------------------------


def _count_syncs(monkeypatch, run):
    """Host reads of tensors (item, tolist, bool, float, int, numpy, cpu; the READS ops below Python) and
    preemption checks during `run()`."""
    calls = Counter()
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    original_preempted = Guard.preempted

    def preempted(self):
        calls["preempted"] += 1
        return original_preempted(self)

    monkeypatch.setattr(Guard, "preempted", preempted)
    try:
        with _DeviceReads(calls):
            run()
    finally:
        monkeypatch.undo()
    return calls


def test_the_read_counter_sees_every_kind_of_device_read():
    """What _count_syncs counts, each once: a meta tensor stands in for a GPU one (its copy to the CPU is
    seen before it fails); the data-dependent ops are counted by name on the CPU."""
    calls = Counter()
    x = torch.tensor([0.0, 1.0])
    with _DeviceReads(calls):
        with pytest.raises(NotImplementedError):
            torch.ones(2, device="meta").cpu()
        with pytest.raises(NotImplementedError):
            torch.empty(2).copy_(torch.ones(2, device="meta"))
        x.sum().item(), x.nonzero(), torch.equal(x, x), x[x > 0], x.cpu(), x.float()  # the last two: no copy
    assert calls == Counter({"aten::_to_copy to cpu": 1, "aten::copy_ to cpu": 1, "aten::_local_scalar_dense": 1,
                             "aten::nonzero": 1, "aten::equal": 1, "aten::index with a boolean mask": 1}), calls


@pytest.mark.parametrize("recipe, extra", [("dcgan_digits_smoke",
                                            TINY_GAN + ["train.phases=[{name: D, repeat: 2}, {name: G}]"]),
                                           ("vae_digits_smoke", ["model.widths=[8,16]", "model.latent=4",
                                                           "train.batch_size=16", "model.tsne_points=60"])])
def test_a_training_step_reads_nothing_back_from_the_device(digits, tmp_path, monkeypatch, fresh_accelerate,
                                                            recipe, extra):
    """Host syncs (Tensor.item/tolist/bool/float/int) and preemption checks happen only at log and
    checkpoint boundaries: a 12-step run makes exactly as many as a 4-step run with the same boundaries
    (one log and one checkpoint, at the end). Today's guard reads a flag per optimizer step and checks
    for preemption every step."""
    from distgen.loops import adversarial, single

    def run(steps):
        cfg = recipes.load(ROOT / "recipes" / f"{recipe}.yaml", [
            *extra, f"data.root={digits}", f"run.dir={tmp_path / str(steps)}", f"train.steps={steps}",
            f"log.every={steps}", f"log.sample_every={steps}", f"run.checkpoint_every={steps}",
            "data.num_workers=1", "eval.every=0", "log.wandb.enabled=false"])
        loop = adversarial if FAMILIES[cfg.family].STYLE == "adversarial" else single
        return lambda: (loop.train(cfg), AcceleratorState._reset_state(True), GradientState._reset_state())

    short, long = _count_syncs(monkeypatch, run(4)), _count_syncs(monkeypatch, run(12))
    assert long["preempted"] == short["preempted"] == 1
    assert long == short, f"host syncs grow with the steps: {dict(short)} in 4 steps, {dict(long)} in 12"


def test_a_non_finite_step_changes_nothing_and_is_counted_on_the_device(monkeypatch, fresh_accelerate):
    """A NaN gradient: the fused optimizer's device-side skip leaves weights and moments untouched, the
    streak is a device tensor (no read), and the check at the boundary raises after max_nonfinite."""
    from distgen.loops.stepper import Group, Stepper

    from distgen.errors import TrainingError

    torch.manual_seed(0)
    acc = Accelerator(cpu=True)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1, fused=True)
    net, opt = acc.prepare(net, opt)
    cfg = recipes.from_dict({"family": "classifier", "train": {"max_nonfinite": 2}})
    run = SimpleNamespace(dir=Path("/nonexistent"))
    guard = Guard.__new__(Guard)  # no signal handlers in the test process
    guard.acc, guard.cfg, guard.run = acc, cfg, run
    guard._init_rows()
    stepper = Stepper(acc, cfg, guard, {"net": net}, {"": Group(("net",), [opt])})
    x = torch.randn(4, 3)
    with stepper.micro_batch(""):
        stepper.step({"loss": net(x).square().mean()}, "")  # a good step: Adam has state now
    stepper.end_iteration()
    before = copy.deepcopy(net.state_dict()), copy.deepcopy(opt.optimizer.state_dict())
    stats.collect()
    calls = _count_syncs(monkeypatch, lambda: [(stepper.step({"loss": net(x).sum() * float("nan")}, ""),
                                                stepper.end_iteration()) for _ in range(2)])
    assert sum(calls.values()) == 0, dict(calls)
    after = net.state_dict(), opt.optimizer.state_dict()
    assert all(torch.equal(before[0][k], after[0][k]) for k in after[0])
    assert all(torch.equal(before[1]["state"][i][k], after[1]["state"][i][k])
               for i in after[1]["state"] for k in after[1]["state"][i])
    assert stats.collect()["nonfinite_skipped"].item() == 1.0
    with pytest.raises(TrainingError, match="2 steps in a row had non-finite gradients"):
        guard.check(3)


# -- accumulation in the single-objective loop ---------------------------------------------------------


def test_single_objective_grad_accum_steps_once_per_k_micro_batches(digits, tmp_path):
    """train.grad_accum = 2 in the single-objective loop means what it means in the adversarial loop: each
    of the 3 optimizer steps sees 2 micro-batches (today the loss is halved and the optimizer steps on each)."""
    run_dir = tmp_path / "accum"
    train("classifier_digits", *TINY_CLS, f"data.root={digits}", f"run.dir={run_dir}", "train.steps=3",
          "train.grad_accum=2", "log.every=3", "eval.every=0")
    ckpt = run_dir / "checkpoints" / "step_3"
    assert torch.load(ckpt / "custom_checkpoint_0.pkl", weights_only=True) == {"step": 3, "batches": 3 * 2}
    adam = torch.load(ckpt / "optimizer.bin", weights_only=True)
    assert {float(s["step"]) for s in adam["state"].values()} == {3.0}  # 3 optimizer steps, not 6
    assert metrics(run_dir)[-1]["step"] == 3


def test_accumulated_micro_batches_step_like_one_big_batch(fresh_accelerate):
    """k micro-batches through the stepper give the weights one step on their concatenation gives."""
    from distgen.loops.stepper import Group, Stepper

    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randn(8, 1)
    ref = torch.nn.Linear(5, 1)
    net = copy.deepcopy(ref)
    torch.optim.SGD(ref.parameters(), lr=0.1).zero_grad()
    torch.nn.functional.mse_loss(ref(x), y).backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.1 * p.grad
    acc = Accelerator(cpu=True, gradient_accumulation_steps=2)
    net, opt = acc.prepare(net, torch.optim.SGD(net.parameters(), lr=0.1))
    cfg = recipes.from_dict({"family": "classifier", "train": {"grad_accum": 2}})
    stepper = Stepper(acc, cfg, SimpleNamespace(record=lambda bad, phase: None), {"net": net},
                      {"": Group(("net",), [opt])})
    for half in (slice(0, 4), slice(4, 8)):
        with stepper.micro_batch(""):
            stepper.step({"mse": torch.nn.functional.mse_loss(net(x[half]), y[half])}, "")
    stats.collect()
    for a, b in zip(ref.parameters(), net.parameters()):
        torch.testing.assert_close(a, b)


def test_one_micro_batch_per_step_goes_around_accelerates_per_call_wrappers(monkeypatch, fresh_accelerate):
    """With grad_accum = 1 on one process and no GradScaler, Accelerate's per-micro-batch contexts and its
    optimizer wrapper only cost host time (its step() searches sys.path for an optional package twice per
    call): the stepper enters no `accumulate`/`no_sync` and steps and zeroes the torch optimizer itself,
    which still steps exactly as the wrapper would."""
    from accelerate.optimizer import AcceleratedOptimizer
    from distgen.loops.stepper import Group, Stepper

    calls = Counter()
    for owner, name in ((Accelerator, "accumulate"), (Accelerator, "no_sync"), (AcceleratedOptimizer, "step"),
                        (AcceleratedOptimizer, "zero_grad")):
        real = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, _real=real, _name=name, **k: (calls.update([_name]),
                                                                                    _real(*a, **k))[1])
    torch.manual_seed(0)
    acc = Accelerator(cpu=True)
    nets = {"D": torch.nn.Linear(3, 1), "G": torch.nn.Linear(2, 3)}
    ref = copy.deepcopy(nets)
    opts = {n: torch.optim.Adam(m.parameters(), lr=0.1, fused=True) for n, m in nets.items()}
    prepared = acc.prepare(nets["D"], nets["G"], opts["D"], opts["G"])
    nets, opts = dict(zip(nets, prepared[:2])), dict(zip(nets, prepared[2:]))
    cfg = recipes.from_dict({"family": "classifier"})
    stepper = Stepper(acc, cfg, SimpleNamespace(record=lambda bad, phase: None, record_round=lambda *a: None),
                      nets, {"D": Group(("D",), [opts["D"]]), "G": Group(("G",), [opts["G"]])})
    z = torch.randn(4, 2)
    for _ in range(3):
        for phase in ("D", "G"):
            with stepper.micro_batch(phase):
                stepper.step({"loss": nets["D"](nets["G"](z)).square().mean()}, phase)
        stepper.end_iteration()
    stats.collect()
    assert not calls, dict(calls)
    ref_opts = {n: torch.optim.Adam(m.parameters(), lr=0.1, fused=True) for n, m in ref.items()}
    for _ in range(3):  # the same steps written by hand
        for phase in ("D", "G"):
            loss = ref["D"](ref["G"](z)).square().mean()
            loss.backward(inputs=list(ref[phase].parameters()))
            ref_opts[phase].step()
            ref_opts[phase].zero_grad(set_to_none=True)
    for name in ref:
        for a, b in zip(ref[name].parameters(), nets[name].parameters()):
            assert torch.equal(a, b), name


# -- fp16: the gradient penalty under a real GradScaler ------------------------------------------------


def _family(name):
    model = {"z_dim": 8, "width": 8} if name == "wgan_gp" else {"condition": "class", "width": 8, "n_blocks": 1}
    return FAMILIES[name](recipes.from_dict({"family": name, "model": model}), DIGITS)


@pytest.mark.parametrize("name", ["wgan_gp", "stargan"])
def test_gradient_penalty_through_a_real_grad_scaler_at_a_large_scale(fresh_accelerate, name):
    """fp16 runs step through a GradScaler (here torch's own, on the CPU, at 2^16). The penalty's
    autograd.grad must run at the scaler's scale (so fp16 gradients do not underflow) and its value and
    the weights after the step must equal the unscaled penalty's: deleting the scaling, or the unscaling,
    in gradient_penalty fails this."""
    from distgen.loops.stepper import Group, Stepper

    torch.manual_seed(0)
    fam = _family(name)
    real, fake = torch.rand(6, 1, 32, 32) * 2 - 1, torch.rand(6, 1, 32, 32) * 2 - 1
    ref_D = copy.deepcopy(fam.nets["D"])
    torch.manual_seed(1)
    plain = fam.gradient_penalty(ref_D, real, fake)  # no scaler: loss_scale() is 1
    plain.backward()
    with torch.no_grad():
        expected = [p - 0.01 * p.grad if p.grad is not None else p.clone() for p in ref_D.parameters()]

    acc = Accelerator(cpu=True)
    acc.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)  # as Accelerate does for fp16 on CUDA
    D, opt = acc.prepare(fam.nets["D"], torch.optim.SGD(fam.nets["D"].parameters(), lr=0.01))
    cfg = recipes.from_dict({"family": name})
    stepper = Stepper(acc, cfg, SimpleNamespace(record=lambda bad, phase: None), {"G": fam.nets["G"], "D": D},
                      {"D": Group(("D",), [opt])})
    seen = []  # the gradient arriving at D's score inside the penalty's autograd.grad

    def on_forward(module, inputs, out):
        if inputs[0].requires_grad:
            out["adv"].register_hook(lambda g: seen.append(g.abs().max().item()))

    D.register_forward_hook(on_forward)
    with stepper.micro_batch("D"):
        torch.manual_seed(1)  # the same interpolation weights
        scaled = fam.gradient_penalty(D, real, fake)
        stepper.step({"D/gp": scaled}, "D")
    stats.collect()
    assert seen == [2.0 ** 16]  # autograd.grad ran at the loss scale
    assert scaled.item() == pytest.approx(plain.item(), rel=1e-5) and plain.item() > 1e-3
    for want, got in zip(expected, D.parameters()):
        torch.testing.assert_close(got, want)  # the scaler unscaled and stepped once
    assert acc.scaler.get_scale() == 2.0 ** 16  # no overflow, no backoff
