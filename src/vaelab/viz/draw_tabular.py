"""Drawing the figures of tabular runs (`vaelab.viz.tabular`) on matplotlib figures."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure, FigureBase

from vaelab.viz.tabular import ColumnMarginals, ColumnPairs, ColumnReconstructions

DATA, MODEL = "C0", "C1"


def _panels(fig: FigureBase, count: int, inches: float = 2.6):
    cols = min(4, count)
    rows = math.ceil(count / cols)
    if isinstance(fig, Figure):  # (a SubFigure's size is its parent's business)
        fig.set_size_inches(*panel_size(count, inches))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[count:]:
        ax.axis("off")
    return axes[:count]


def _short(name: str) -> str:
    return name if len(name) <= 24 else name[:23] + "…"


def _suptitle(fig: FigureBase, title: str, total: int, shown: int) -> None:
    more = f" (the first {shown} of {total} columns)" if total > shown else ""
    fig.suptitle(title + more, fontsize=10)


def draw_column_marginals(fig: FigureBase, m: ColumnMarginals) -> None:
    """One histogram per column, data and model samples on shared bins, as densities."""
    axes = _panels(fig, len(m.names))
    for j, ax in enumerate(axes):
        both = np.concatenate([m.data[:, j], m.samples[:, j]])
        lo, hi = np.percentile(both, [0.5, 99.5])
        bins = np.linspace(lo, hi, 31) if hi > lo else 10
        ax.hist(m.data[:, j], bins=bins, density=True, alpha=0.55, color=DATA, label="data")
        ax.hist(
            m.samples[:, j],
            bins=bins,
            density=True,
            histtype="step",
            linewidth=1.5,
            color=MODEL,
            label="model samples",
        )
        ax.set_title(_short(m.names[j]), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    axes[0].legend(fontsize=7)
    _suptitle(fig, m.title, m.total, len(m.names))
    _tight(fig)


def draw_column_pairs(fig: Figure, p: ColumnPairs) -> None:
    """A scatter-plot matrix of the columns below the diagonal: model samples, and the data drawn
    over them; names on the diagonal."""
    c = len(p.names)
    fig.set_size_inches(2.4 * c + 0.4, 2.4 * c + 0.8)
    axes = fig.subplots(c, c, squeeze=False)
    for i in range(c):
        for j in range(c):
            ax = axes[i, j]
            ax.tick_params(labelsize=6)
            if i == j:
                ax.text(
                    0.5, 0.5, _short(p.names[i]), ha="center", va="center", fontsize=9, transform=ax.transAxes
                )
                ax.set_xticks([])
                ax.set_yticks([])
            elif i > j:
                # samples first, the data on top: there are usually fewer data rows
                ax.scatter(
                    p.samples[:, j],
                    p.samples[:, i],
                    s=3,
                    alpha=0.3,
                    color=MODEL,
                    linewidths=0,
                    rasterized=True,
                )
                ax.scatter(
                    p.data[:, j], p.data[:, i], s=6, alpha=0.8, color=DATA, linewidths=0, rasterized=True
                )
            else:
                ax.axis("off")
    if c > 1:
        axes[1, 0].legend(["model samples", "data"], fontsize=7, markerscale=3)
    fig.suptitle(p.title, fontsize=10)
    fig.tight_layout()


def draw_column_reconstructions(fig: FigureBase, r: ColumnReconstructions) -> None:
    """Per column: each row's value (x axis) against its reconstruction (y axis), the line y = x."""
    for j, ax in enumerate(_panels(fig, len(r.names))):
        x, y = r.data[:, j], r.reconstructions[:, j]
        ax.scatter(x, y, s=6, alpha=0.6, color=DATA, linewidths=0)
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", linewidth=0.8, linestyle=":")
        ax.set_title(_short(r.names[j]), fontsize=9)
        ax.set_xlabel("data", fontsize=7)
        ax.set_ylabel("reconstruction", fontsize=7)
        ax.tick_params(labelsize=7)
    _suptitle(fig, r.title, r.total, len(r.names))
    _tight(fig)


def panel_size(count: int, inches: float = 2.6) -> tuple[float, float]:
    """The size (width, height) in inches that `_panels` gives a figure of `count` panels."""
    cols = min(4, count)
    return inches * cols + 0.4, inches * math.ceil(count / cols) + 0.9


def _tight(fig: FigureBase) -> None:
    if isinstance(fig, Figure):  # a SubFigure is laid out by its parent's (constrained) layout
        fig.tight_layout()
