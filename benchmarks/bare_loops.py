"""Hand-written training loops on distgen's own nets: the yardstick of benchmarks/gpu.py (harness/bare).

    python benchmarks/gpu.py --bare 1             # every configuration also runs its bare loop
    make gpu-bench                                # the grid of issue-sized figures, one JSON line

What an engineer would write without a harness, for dcgan (BCE), wgan_gp (Wasserstein loss, gradient
penalty with its double backward, 5 critic steps per generator step) and sagan (hinge loss): the family's
nets and fused Adam, one autocast region per phase under bf16, the generator step computing no weight
gradients of D, no statistics, no non-finite check, no EMA. `captured=True` records each phase's step as
a CUDA graph after a few eager warm-up iterations (PyTorch's whole-network capture: capturable Adam with
the learning rate in a device tensor, static input batch) and replays it, as train.cuda_graph does.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

N_CRITIC = {"dcgan": 1, "wgan_gp": 5, "sagan": 1}


def _losses(family_name: str, family, G, D, z_dim: int, n: int, device):
    """(d_loss(real), g_loss()) written out for the family."""

    def noise():
        return torch.randn(n, z_dim, 1, 1, device=device)

    if family_name == "dcgan":
        def d_loss(real):
            with torch.no_grad():
                fake = G(noise())
            r, f = D(real)["adv"].float(), D(fake)["adv"].float()
            return (F.binary_cross_entropy_with_logits(r, torch.ones_like(r))
                    + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))

        def g_loss():
            f = D(G(noise()))["adv"].float()
            return F.binary_cross_entropy_with_logits(f, torch.ones_like(f))
    elif family_name == "sagan":
        def d_loss(real):
            with torch.no_grad():
                fake = G(noise())
            return F.relu(1.0 - D(real)["adv"].float()).mean() + F.relu(1.0 + D(fake)["adv"].float()).mean()

        def g_loss():
            return -D(G(noise()))["adv"].float().mean()
    elif family_name == "wgan_gp":
        gp_weight = family.model_cfg.gp_weight

        def d_loss(real):
            with torch.no_grad():
                fake = G(noise())
            eps = torch.rand(n, 1, 1, 1, device=device, dtype=real.dtype)
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(D(x_hat)["adv"].float().sum(), x_hat, create_graph=True)
            gp = (grad.float().flatten(1).norm(dim=1) - 1).square().mean()
            return D(fake)["adv"].float().mean() - D(real)["adv"].float().mean() + gp_weight * gp

        def g_loss():
            return -D(G(noise()))["adv"].float().mean()
    else:
        raise ValueError(f"no bare loop for family '{family_name}' (dcgan, wgan_gp, sagan)")
    return d_loss, g_loss


def bare_rate(cfg, device: str, precision: str, real: torch.Tensor, captured: bool = False) -> float:
    """Images/s (real images consumed) of the hand-written loop over the second half of cfg.train.steps
    generator steps, on the recipe's nets, with `real` as every batch."""
    from distgen.data import DataInfo
    from distgen.families import FAMILIES

    name, steps, n = cfg.family, cfg.train.steps, cfg.train.batch_size
    torch.manual_seed(cfg.run.seed)
    info = DataInfo(cfg.data.image_size, real.shape[1], (), (), {}, {})
    family = FAMILIES[name](cfg, info, device)
    G, D = family.nets["G"].to(device), family.nets["D"].to(device)
    if cfg.train.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    betas = (cfg.optim.beta1, cfg.optim.beta2)
    lr = (lambda x: torch.tensor(x, device=device)) if captured else (lambda x: x)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr(cfg.optim.lr_g), betas=betas, fused=True, capturable=captured)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr(cfg.optim.lr_d), betas=betas, fused=True, capturable=captured)
    d_loss, g_loss = _losses(name, family, G, D, cfg.model.z_dim, n, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(torch.device(device).type, dtype=dtype)) if dtype else nullcontext
    static = real.clone()

    def d_step():
        with autocast():
            loss = d_loss(static)
        loss.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)

    def g_step():
        D.requires_grad_(False)
        with autocast():
            loss = g_loss()
        loss.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        D.requires_grad_(True)

    def iteration(d, g):
        for _ in range(N_CRITIC[name]):
            static.copy_(real, non_blocking=True)  # a new batch arrives (the harness copies one too)
            d()
        g()

    d_run, g_run = d_step, g_step
    warmup = 3
    if captured:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                iteration(d_step, g_step)
        torch.cuda.current_stream().wait_stream(side)
        pool = torch.cuda.graph_pool_handle()
        graphs = []
        for fn in (d_step, g_step):
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                fn()
            graphs.append(graph)
        d_run, g_run = graphs[0].replay, graphs[1].replay
    start = None
    for step in range(steps):
        if step == steps // 2:
            if device == "cuda":
                torch.cuda.synchronize()  # deliberate: the timer starts with an idle GPU
            start = time.perf_counter()
        iteration(d_run, g_run)
    if device == "cuda":
        torch.cuda.synchronize()
    return n * N_CRITIC[name] * (steps - steps // 2) / (time.perf_counter() - start)
