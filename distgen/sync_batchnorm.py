"""BatchNorm with statistics over every process's batch that never waits on the host, on any backend.

    from distgen.sync_batchnorm import convert_sync_batchnorm      (train.sync_bn, distgen/loops/adversarial.py)

Why not torch.nn.SyncBatchNorm: its forward reads a tensor back to the host (`count_all[mask]`, a
boolean-mask index, to drop empty ranks) and all-gathers per-rank statistics, and its backward adds an
all_reduce: a DCGAN iteration waits on the host ~17 times and runs ~30 latency-bound collectives. It is
CUDA-only (DDP refuses it on CPU modules), so nothing here could ever run it. This module instead does,
per layer and per training step:

  forward   one all_reduce of [sum(x), sum(x*x), count] per channel (2C+1 numbers)
  backward  one all_reduce of [sum(dy), sum(dy*(x-mean))] per channel (2C numbers), only when the
            input needs a gradient (as torch's: the parameters' gradients need only local sums)

with fixed shapes (a rank whose batch is empty contributes zeros and a count of 0), no `.item()`, no
boolean masks, through the default process group of torch.distributed (gloo, NCCL, ...). Without a
process group, or in eval mode, it is torch's BatchNorm. Running statistics update as
torch's BatchNorm does (momentum, or a cumulative average when momentum is None; unbiased variance of
the global batch in running_var). Gradients of weight and bias are this rank's share, which DDP then
averages, as with torch's SyncBatchNorm.

The price of one reduction: the variance is E[x^2] - E[x]^2, computed in float32 (float64 for float64
input). For a channel whose mean is large against its spread this loses digits that Welford's
per-rank update keeps; BatchNorm inputs (conv outputs) have means of the order of their spread.

Sampling copies (distgen/generation.py plain_batchnorm) turn these layers back into plain BatchNorm.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _per_channel(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A [C] tensor shaped to broadcast against x ([N, C, ...])."""
    return t.view(1, -1, *([1] * (x.dim() - 2)))


class _SyncBatchNormFunction(torch.autograd.Function):
    """Normalise x with the mean and biased variance of every rank's batch; returns (y, mean, var, count)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, group):
        acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        xa, dims = x.to(acc_dtype), _reduce_dims(x)
        count = torch.full((1,), x.numel() // max(x.shape[1], 1), dtype=acc_dtype, device=x.device)  # static shape
        local = torch.cat([xa.sum(dims), (xa * xa).sum(dims), count])
        dist.all_reduce(local, group=group)  # the forward's one collective
        c = x.shape[1]
        n = local[2 * c:].clamp_min(1)  # every rank empty: zeros out, not NaN
        mean = local[:c] / n
        var = (local[c:2 * c] / n - mean * mean).clamp_min(0)
        invstd = torch.rsqrt(var + eps)
        y = (xa - _per_channel(mean, x)) * _per_channel(invstd, x)
        if weight is not None:
            y = y * _per_channel(weight.to(acc_dtype), x) + _per_channel(bias.to(acc_dtype), x)
        ctx.save_for_backward(x, weight, mean, invstd, n)
        ctx.group = group
        ctx.mark_non_differentiable(mean, var, n)
        return y.to(x.dtype), mean, var, n

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar, _dn):
        x, weight, mean, invstd, n = ctx.saved_tensors
        dims, c = _reduce_dims(x), x.shape[1]
        acc_dtype = mean.dtype
        dya, xmu = dy.to(acc_dtype), x.to(acc_dtype) - _per_channel(mean, x)
        sums = torch.cat([dya.sum(dims), (dya * xmu).sum(dims)])
        grad_weight = (sums[c:] * invstd).to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sums[:c].to(weight.dtype) if weight is not None and ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            sums = sums.clone()  # the local sums above are this rank's weight and bias gradients
            dist.all_reduce(sums, group=ctx.group)  # the backward's one collective
            mean_dy, mean_dy_xmu = sums[:c] / n, sums[c:] / n
            scale = invstd if weight is None else invstd * weight.to(acc_dtype)
            grad_x = ((dya - _per_channel(mean_dy, x) - xmu * _per_channel(invstd * invstd * mean_dy_xmu, x))
                      * _per_channel(scale, x)).to(x.dtype)
        return grad_x, grad_weight, grad_bias, None, None


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over the batches of every process in `process_group` (default: the whole world).

    Not a subclass of torch.nn.SyncBatchNorm on purpose: DDP refuses those on CPU modules."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        batch_stats = self.training or not self.track_running_stats
        if not batch_stats or not (dist.is_available() and dist.is_initialized()):
            return super().forward(input)  # plain BatchNorm: eval mode, or no process group
        # a process group of one takes this path too (its all_reduce changes nothing): launch/gpu_check.py
        # exercises the kernels on one GPU that way
        group = self.process_group if self.process_group is not None else dist.group.WORLD
        y, mean, var, n = _SyncBatchNormFunction.apply(input, self.weight, self.bias, self.eps, group)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, n)
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        """As torch's BatchNorm: the unbiased variance of the global batch; a cumulative average when
        momentum is None, its factor kept on the device (torch's own reads num_batches_tracked back).
        `n`: the global batch's values per channel."""
        self.num_batches_tracked.add_(1)
        stats_dtype = self.running_mean.dtype
        factor = (self.momentum if self.momentum is not None
                  else 1.0 / self.num_batches_tracked.to(stats_dtype))  # a tensor: no read back
        unbiased = var * n / (n - 1).clamp_min(1)
        self.running_mean.lerp_(mean.to(stats_dtype), factor)
        self.running_var.lerp_(unbiased.to(stats_dtype), factor)

def share_state(src, out):
    """`out` (a new BatchNorm-like layer) holding `src`'s parameters and buffers (shared, not copied) and
    its train/eval mode: the layer swap both ways (to SyncBatchNorm here, back in distgen/generation.py)."""
    if src.affine:
        out.weight, out.bias = src.weight, src.bias
    out.running_mean, out.running_var = src.running_mean, src.running_var
    out.num_batches_tracked = src.num_batches_tracked
    out.train(src.training)
    return out


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """`module` with every BatchNorm{1,2,3}d (and torch's SyncBatchNorm) replaced by distgen's
    SyncBatchNorm sharing its parameters and buffers (in place for children; returns the replacement
    when `module` itself is one). Like torch.nn.SyncBatchNorm.convert_sync_batchnorm, on any device."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
        return share_state(module, SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                                 module.track_running_stats, process_group))
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module
