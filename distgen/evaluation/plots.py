"""Figures for reports and comparisons: matplotlib with the Agg backend (no display, no network), PIL thumbnails."""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from PIL import Image  # noqa: E402

from distgen.errors import DataError  # noqa: E402
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


def thumbnail(src: Path, dst: Path, width: int) -> Path:
    """`src` scaled down to at most `width` pixels wide, as <dst>.png or <dst>.jpg, whichever is smaller
    (PNG for figures and flat grids, JPEG for photos and noise). Returns the file written."""
    try:
        with Image.open(src) as image:
            image.load()
    except (OSError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"{src}: not a readable image ({exc})") from None
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # JPEG takes neither alpha nor a palette
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS)
    encoded = {}
    for suffix, kwargs in ((".png", {"optimize": True}), (".jpg", {"quality": 85})):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG" if suffix == ".png" else "JPEG", **kwargs)
        encoded[suffix] = buffer.getvalue()
    suffix = min(encoded, key=lambda k: len(encoded[k]))
    out = dst.parent / f"{dst.name}{suffix}"  # not with_suffix: dst may hold dots (lr_d=1.5e-4)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(encoded[suffix])
    return out


def plot_bands(panels: list[tuple[str, dict[str, list[tuple[float, float, float]]]]], path: Path,
               cols: int = 4) -> Path:
    """Like plot_panels, for groups of runs: each line the mean over a group, its band ± one std."""
    def band(ax, label, points):
        xs, means, stds = zip(*points)
        stds = [0.0 if math.isnan(s) else s for s in stds]  # one run at that step: no band
        ax.plot(xs, means, label=label, linewidth=1.2)
        ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.25)

    return _panel_grid(panels, path, cols, band)
