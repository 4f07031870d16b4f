"""Figures for reports and comparisons: matplotlib with the Agg backend (no display, no network)."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402  (after choosing the backend)
import matplotlib.pyplot as plt  # noqa: E402

from distgen.evaluation.runs import is_number  # noqa: E402

Series = dict[str, list[tuple[float, float]]]  # line label -> (step, value) points


def series(history: list[dict], key: str) -> list[tuple[float, float]]:
    return [(row["step"], row[key]) for row in history if is_number(row.get(key))]


def _panel_grid(panels: list, path: Path, cols: int, draw) -> Path:
    """The figure both curve plots share: one axes per (title, lines) panel in a grid, x = step;
    `draw(ax, label, points)` draws one line."""
    cols = max(1, min(cols, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels):
        for label, points in lines.items():
            if points:
                draw(ax, label, points)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if any(lines.values()):
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_panels(panels: list[tuple[str, Series]], path: Path, cols: int = 3) -> Path:
    """One axes per (title, lines) panel, in a grid; x = step. Returns path."""
    def line(ax, label, points):
        xs, ys = zip(*points)
        ax.plot(xs, ys, label=label, marker="." if len(xs) < 30 else None, linewidth=1.2)

    return _panel_grid(panels, path, cols, line)


def image_strip(images: list[tuple[str, Path]], path: Path, most: int = 6) -> Path:
    """Up to `most` images side by side (evenly chosen, first and last included), captioned."""
    if len(images) > most:
        picks = sorted({round(i * (len(images) - 1) / (most - 1)) for i in range(most)})
        images = [images[i] for i in picks]
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.4), squeeze=False)
    for ax, (label, file) in zip(axes.flat, images):
        ax.imshow(mpimg.imread(file), cmap="gray")
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_bands(panels: list[tuple[str, dict[str, list[tuple[float, float, float]]]]], path: Path,
               cols: int = 4) -> Path:
    """Like plot_panels, for groups of runs: each line the mean over a group, its band ± one std."""
    def band(ax, label, points):
        xs, means, stds = zip(*points)
        stds = [0.0 if math.isnan(s) else s for s in stds]  # one run at that step: no band
        ax.plot(xs, means, label=label, linewidth=1.2)
        ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.25)

    return _panel_grid(panels, path, cols, band)
