"""Figures the families draw at evaluation time: t-SNE maps of embeddings (scikit-learn, matplotlib).

    xy = tsne(features)                                  # (N, D) tensor -> (N, 2) array, seeded
    scatter(xy, labels, ["0", "1", ...], "eval/tsne_step_500.png", "test latents by class")

Matplotlib's object API only (no pyplot): no global figure state, no display backend.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def tsne(features: torch.Tensor, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of N feature vectors (PCA initialisation, fixed seed: the same input gives the same map)."""
    from sklearn.manifold import TSNE  # imported here: it is slow to import and only figures need it
    from threadpoolctl import threadpool_limits

    x = features.detach().float().flatten(1).cpu().numpy()
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    # One thread: for a few thousand points Barnes-Hut gains little from more, and on a busy machine
    # OpenMP threads that wait for each other made it 7-15x slower (measured on 2 cores).
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(x)


def scatter(xy: np.ndarray, groups, names: list[str], path: str | Path, title: str) -> Path:
    """One colour per group (groups: N ints indexing `names`), with a legend; written as a PNG."""
    # imported here: matplotlib costs every training process ~0.4 s at startup, and only evaluation draws
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    groups = np.asarray(groups)
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot()
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    for g, name in enumerate(names):
        mine = groups == g
        if mine.any():
            ax.scatter(xy[mine, 0], xy[mine, 1], s=6, color=cmap(g % cmap.N), label=name, alpha=0.8)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=8, loc="best", frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
