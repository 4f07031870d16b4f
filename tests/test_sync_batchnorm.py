"""distgen/sync_batchnorm.py on two gloo processes: the same outputs, gradients and running statistics as
one process's BatchNorm on the concatenated batch (unequal batches, an empty one too), no host read in a
step, exactly one all_reduce per forward and one per backward; the converter and its way back."""
from __future__ import annotations

import time
from collections import Counter

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import free_port
from distgen.generation import plain_batchnorm
from distgen.sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

C, STEPS = 3, 2
# rows of the global batch on rank 0 and rank 1, and BatchNorm's momentum (None: a cumulative average)
CASES = {"unequal": ((5, 2), 0.1), "one_empty": ((7, 0), 0.1), "cumulative": ((4, 3), None)}


class OpCounter(TorchDispatchMode):
    """Counts every aten/c10d op that runs: host reads show up as _local_scalar_dense (.item(), bool(t))
    and nonzero (boolean-mask indexing); collectives as c10d ops."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[f"{func.namespace}.{func.overloadpacket.__name__}"] += 1
        return func(*args, **(kwargs or {}))


def global_batches():
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(7, C, 4, 4, generator=gen, dtype=torch.float64) * 3 + 1 for _ in range(STEPS)]
    dys = [torch.randn(7, C, 4, 4, generator=gen, dtype=torch.float64) for _ in range(STEPS)]
    weight = torch.rand(C, generator=gen, dtype=torch.float64) + 0.5
    bias = torch.randn(C, generator=gen, dtype=torch.float64)
    return xs, dys, weight, bias


def init_bn(bn, weight, bias):
    with torch.no_grad():
        bn.weight.copy_(weight)
        bn.bias.copy_(bias)
    return bn


def _rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    xs, dys, weight, bias = global_batches()
    results = {}
    for case, (split, momentum) in CASES.items():
        lo, hi = sum(split[:rank]), sum(split[:rank + 1])
        bn = init_bn(convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(C, momentum=momentum).double()))[0],
                     weight, bias)
        got = {"y": [], "dx": [], "ops": []}
        for x, dy in zip(xs, dys):
            x = x[lo:hi].clone().requires_grad_(True)
            with OpCounter() as forward:
                y = bn(x)
            with OpCounter() as backward:
                (y * dy[lo:hi]).sum().backward()
            got["y"].append(y.detach())
            got["dx"].append(x.grad)
            got["ops"].append((dict(forward.ops), dict(backward.ops)))
        got.update(dweight=bn.weight.grad, dbias=bn.bias.grad, running_mean=bn.running_mean,
                   running_var=bn.running_var, tracked=bn.num_batches_tracked)
        results[case] = got
    torch.save(results, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("syncbn")
    ctx = torch.multiprocessing.start_processes(_rank, args=(free_port(), str(out)), nprocs=2, join=False,
                                                start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two ranks did not finish within 120 s (a hang in a collective)")
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def reference(momentum):
    """One process, torch's BatchNorm2d, the whole batch."""
    xs, dys, weight, bias = global_batches()
    bn = init_bn(nn.BatchNorm2d(C, momentum=momentum).double(), weight, bias)
    ys, dxs = [], []
    for x, dy in zip(xs, dys):
        x = x.clone().requires_grad_(True)
        y = bn(x)
        (y * dy).sum().backward()
        ys.append(y.detach())
        dxs.append(x.grad)
    return bn, ys, dxs


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_match_one_batchnorm_on_the_whole_batch(ranks, case):
    bn, ys, dxs = reference(CASES[case][1])
    a, b = ranks[0][case], ranks[1][case]
    for step in range(STEPS):
        torch.testing.assert_close(torch.cat([a["y"][step], b["y"][step]]), ys[step])
        torch.testing.assert_close(torch.cat([a["dx"][step], b["dx"][step]]), dxs[step])
    # each rank's parameter gradient is its share (DDP sums/averages them); together the whole batch's
    torch.testing.assert_close(a["dweight"] + b["dweight"], bn.weight.grad)
    torch.testing.assert_close(a["dbias"] + b["dbias"], bn.bias.grad)
    for r in (a, b):  # running statistics: the global batch's (unbiased variance), the same on both ranks
        torch.testing.assert_close(r["running_mean"], bn.running_mean)
        torch.testing.assert_close(r["running_var"], bn.running_var)
        assert int(r["tracked"]) == STEPS


@pytest.mark.parametrize("case", list(CASES))
def test_a_step_reads_nothing_back_and_runs_one_all_reduce_each_way(ranks, case):
    for rank in ranks:
        for forward, backward in rank[case]["ops"]:
            for ops in (forward, backward):
                assert ops.get("aten._local_scalar_dense", 0) == 0 and ops.get("aten.nonzero", 0) == 0, ops
                collectives = {k: v for k, v in ops.items() if not k.startswith("aten.")}
                assert collectives == {"c10d.allreduce_": 1}, ops


def test_one_process_without_a_process_group_is_plain_batchnorm():
    _, _, weight, bias = global_batches()
    x = torch.randn(6, C, 5, dtype=torch.float64)
    mine = init_bn(SyncBatchNorm(C, momentum=None).double(), weight, bias)
    plain = init_bn(nn.BatchNorm1d(C, momentum=None).double(), weight, bias)
    for _ in range(2):
        torch.testing.assert_close(mine(x), plain(x))
    torch.testing.assert_close(mine.running_var, plain.running_var)
    mine.eval(), plain.eval()
    torch.testing.assert_close(mine(x), plain(x))


def test_the_converter_shares_parameters_and_sampling_copies_turn_it_back():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Sequential(nn.BatchNorm1d(4)),
                        nn.InstanceNorm2d(4))
    weight = net[1].weight
    converted = convert_sync_batchnorm(net)
    assert [type(m) for m in converted.modules()].count(SyncBatchNorm) == 2
    assert isinstance(converted[4], nn.InstanceNorm2d)  # not a BatchNorm
    assert converted[1].weight is weight and converted[1].running_var is not None
    back = plain_batchnorm(converted)
    assert not any(isinstance(m, SyncBatchNorm) for m in back.modules())
    assert back[1].weight is weight
    assert isinstance(convert_sync_batchnorm(nn.BatchNorm2d(2)), SyncBatchNorm)
