"""Drawing: the figure data of `images`, `latent` and `curves` onto matplotlib figures, saved as PNG.

Every function draws on a `matplotlib.figure.Figure` made here (no pyplot, no global backend:
a Figure renders to PNG by itself), so importing vaelab never changes a user's matplotlib state.
`render(data)` draws any figure-data object on a new figure; `save_figure` writes it atomically.
"""

from __future__ import annotations

from functools import singledispatch
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from vaelab.diagnostics import active_units_rule, latent_name
from vaelab.runs import atomic_write
from vaelab.viz.curves import ElboChart, TrainingCurves
from vaelab.viz.draw_layers import draw_layer_kls
from vaelab.viz.draw_tabular import draw_column_marginals, draw_column_pairs, draw_column_reconstructions
from vaelab.viz.images import ImageGrid, ImageRows
from vaelab.viz.latent import LATENT_UNIT, Interpolations, LatentGrid, LatentScatter, Traversals
from vaelab.viz.layers import LayerKL
from vaelab.viz.tabular import ColumnMarginals, ColumnPairs, ColumnReconstructions

DPI = 120


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` to the PNG `path` (temporary file + rename), cropped to what was drawn."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))
    return path


def _hide_frame(ax) -> None:
    for spine in ax.spines.values():
        spine.set_visible(False)


def _show_intensities(ax, canvas: np.ndarray) -> None:
    """Intensities in [0, 1] as they are, one screen pixel per value: a grey canvas (H, W) with 0
    black and 1 white (never inverted, so dark-background images stay dark), an RGB canvas
    (H, W, 3) in its colours."""
    pixels = np.clip(canvas, 0, 1)
    if pixels.ndim == 3:
        ax.imshow(pixels, interpolation="nearest")
    else:
        ax.imshow(pixels, cmap="gray", vmin=0, vmax=1, interpolation="nearest")


# ------------------------------------------------------------------------------------- images


def draw_image_grid(ax, grid: ImageGrid, *, fontsize: float = 10) -> None:
    """A tiled picture with its title and no axes."""
    _show_intensities(ax, grid.canvas)
    ax.set_title(grid.title, fontsize=fontsize)
    ax.axis("off")


def draw_image_rows(ax, rows: ImageRows) -> None:
    """The one drawing of labelled rows of images: row labels on the left, column labels below."""
    _show_intensities(ax, rows.canvas)
    ax.set_yticks([rows.row_centre(i) for i in range(len(rows.row_labels))])
    ax.set_yticklabels(rows.row_labels, fontsize=rows.label_fontsize)
    ax.set_xticks([rows.column_centre(j) for j in range(len(rows.column_labels))])
    ax.set_xticklabels(rows.column_labels, fontsize=rows.label_fontsize)
    if rows.xlabel:
        ax.set_xlabel(rows.xlabel, fontsize=rows.label_fontsize + 1)
    ax.set_title(rows.title, fontsize=rows.title_fontsize)
    ax.tick_params(length=0)
    _hide_frame(ax)


# ------------------------------------------------------------------------------------- latent


def draw_latent_scatter(
    ax, scatter: LatentScatter, title: str | None = None, *, box: tuple[float, ...] | None = None
) -> None:
    """Draw `scatter` on `ax`; `box` (z1min, z1max, z2min, z2max) outlines a decoded grid's range."""
    p = scatter.points
    size = 8 if len(p) <= 2000 else 3
    ax.scatter(p[:, 0], p[:, 1], c=scatter.colors, s=size, alpha=0.75, linewidths=0, rasterized=True)
    if scatter.classes:
        handles = [
            Line2D([], [], marker="o", linestyle="", color=color, markersize=6, label=name)
            for name, color in zip(scatter.class_names, scatter.class_colors, strict=True)
        ]
        ax.legend(
            handles=handles,
            title="class" if scatter.named else "label",
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
            fontsize=8,
            title_fontsize=9,
            frameon=False,
            ncols=1 if len(handles) <= 20 else 2,
        )
    if box is not None and scatter.projection == "none":
        z1min, z1max, z2min, z2max = box
        ax.add_patch(
            Rectangle(
                (z1min, z2min),
                z1max - z1min,
                z2max - z2min,
                fill=False,
                linestyle="--",
                edgecolor="0.3",
                linewidth=1.0,
                label="decoded grid",
            )
        )
        ax.annotate(
            "range of the decoded grid",
            (z1min, z2max),
            xytext=(2, 3),
            textcoords="offset points",
            fontsize=7,
            color="0.3",
        )
    if scatter.projection == "1-d" and scatter.named:  # the second axis is the class code
        ax.set_yticks(scatter.classes)
        ax.set_yticklabels(scatter.class_names, fontsize=8)
    ax.set_xlabel(scatter.axis_labels[0], fontsize=9)
    ax.set_ylabel(scatter.axis_labels[1], fontsize=9)
    ax.set_title(scatter.title if title is None else title, fontsize=10)
    ax.grid(alpha=0.25, linewidth=0.5)
    if scatter.projection == "none":
        ax.set_aspect("equal", adjustable="datalim")


def draw_latent_grid(ax, grid: LatentGrid, title: str | None = None, *, fontsize: float = 10) -> None:
    """The tiled decoder means with the latent coordinates of some cells on the axes."""
    n = len(grid.z1_values)
    h, w = grid.cell_size
    _show_intensities(ax, grid.canvas)
    step = max(1, (n - 1) // 4)
    ticks = sorted(set(range(0, n, step)) | {n - 1})
    ax.set_xticks([j * (w + grid.pad) + (w - 1) / 2 for j in ticks])
    ax.set_xticklabels([f"{grid.z1_values[j]:.2f}" for j in ticks], fontsize=8)
    ax.set_yticks([i * (h + grid.pad) + (h - 1) / 2 for i in ticks])
    ax.set_yticklabels([f"{grid.z2_values[n - 1 - i]:.2f}" for i in ticks], fontsize=8)
    d1, d2 = grid.dims
    ax.set_xlabel(f"{latent_name(d1)} ({LATENT_UNIT})", fontsize=9)
    ax.set_ylabel(f"{latent_name(d2)} ({LATENT_UNIT})", fontsize=9)
    ax.set_title(grid.title if title is None else title, fontsize=fontsize)
    _hide_frame(ax)


# ------------------------------------------------------------------------------------- curves


def draw_training_curves(fig: Figure, curves: TrainingCurves) -> None:
    """Three panels (ELBO, reconstruction term, KL) for a VAE; one for an AE. Epochs are whole
    numbers, so the epoch axis has integer ticks only."""
    panels = curves.panels
    fig.set_size_inches(4.35 * len(panels) + (3.0 if len(panels) == 1 else 0), 3.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, train_values, valid_values) in zip(axes, panels, strict=True):
        ax.plot(curves.epoch, train_values, label="train (running mean over the epoch)", color="C0")
        ax.plot(curves.epoch, valid_values, label="validation (end of epoch)", color="C1")
        ax.axvline(curves.best_epoch, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("nats per example", fontsize=9)
        ax.grid(alpha=0.25, linewidth=0.5)
        ax.tick_params(labelsize=8)
    axes[0].legend(fontsize=8, loc="center right" if len(axes) == 1 else "lower right")
    axes[-1 if len(axes) == 1 else 1].annotate(
        f"best validation epoch {curves.best_epoch} (weights kept)",
        (curves.best_epoch, 0.02),
        xycoords=("data", "axes fraction"),
        xytext=(-4, 0),
        textcoords="offset points",
        ha="right",
        fontsize=7,
        color="0.4",
    )
    fig.suptitle(curves.title, fontsize=11)
    fig.tight_layout()


def draw_elbo_chart(fig: Figure, chart: ElboChart) -> None:
    """Bars of the ELBO terms, and the KL of each latent dim beside them where it is known."""
    panels = 2 if chart.kl_per_dim is not None else 1
    fig.set_size_inches(6.2 * panels + 0.6, 3.9)
    axes = fig.subplots(1, panels, squeeze=False)
    ax = axes[0, 0]
    names = [name for name, _ in chart.terms]
    values = np.array([v for _, v in chart.terms])
    colors = ["C0" if v < 0 else "C2" for v in values]
    y = np.arange(len(values))[::-1]
    ax.barh(y, values, color=colors, height=0.6)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.axvline(0, color="0.3", linewidth=0.8)
    span = float(np.abs(values).max()) or 1.0
    for yi, v in zip(y, values, strict=True):
        ax.annotate(
            f"{v:.2f}",
            (v, yi),
            xytext=(3 if v >= 0 else -3, 0),
            textcoords="offset points",
            ha="left" if v >= 0 else "right",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(min(0.0, values.min()) - 0.25 * span, max(0.0, values.max()) + 0.25 * span)
    ax.set_xlabel("nats per example (dataset mean)", fontsize=9)
    given = ", each example given its label y" if chart.conditional else ""
    ax.set_title(f"ELBO terms on the {chart.split} split (N = {chart.num_examples}){given}", fontsize=10)
    ax.grid(axis="x", alpha=0.25, linewidth=0.5)
    if chart.kl_per_dim is not None:
        ax = axes[0, 1]
        kl = chart.kl_per_dim
        dims = np.arange(1, len(kl) + 1)
        ax.bar(dims, kl, color="C1", width=0.8 if len(kl) > 4 else 0.5)
        ax.set_xlabel("latent dim", fontsize=9)
        ax.set_ylabel(f"mean KL(q(z_u|x{', y' if chart.conditional else ''}) || p(z_u)), nats", fontsize=9)
        if len(kl) <= 16:
            ax.set_xticks(dims)
            ax.set_xticklabels([latent_name(d) for d in range(len(kl))])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        title = f"KL per latent dim, total {kl.sum():.2f} nats"
        if chart.active_units is not None and chart.active_threshold is not None:
            rule = active_units_rule(chart.active_threshold)
            title += f"\nactive units ({rule}): {chart.active_units} of {len(kl)}"
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.25, linewidth=0.5)
        ax.tick_params(labelsize=8)
    fig.tight_layout()


# ------------------------------------------------------------------------------------- render


@singledispatch
def render(data) -> Figure:
    """A new Figure with `data` (a figure-data object of vaelab.viz) drawn on it."""
    raise TypeError(f"no drawing for {type(data).__name__}")


@render.register
def _(data: ImageGrid) -> Figure:
    height, width = data.canvas.shape[:2]
    scale = 6.0 / max(height, width)
    fig = Figure(figsize=(max(3.0, width * scale), max(3.0, height * scale) + 0.5))
    draw_image_grid(fig.subplots(), data)
    return fig


@render.register
def _(data: ImageRows) -> Figure:
    fig = Figure(figsize=data.inches)
    draw_image_rows(fig.subplots(), data)
    return fig


@render.register
def _(data: Interpolations) -> Figure:
    return render(data.rows)


@render.register
def _(data: Traversals) -> Figure:
    return render(data.rows)


@render.register
def _(data: LatentScatter) -> Figure:
    fig = Figure(figsize=(6.8, 5.6))
    draw_latent_scatter(fig.subplots(), data)
    return fig


@render.register
def _(data: LatentGrid) -> Figure:
    fig = Figure(figsize=(7.6, 8.0))
    draw_latent_grid(fig.subplots(), data)
    return fig


@render.register
def _(data: TrainingCurves) -> Figure:
    fig = Figure()
    draw_training_curves(fig, data)
    return fig


@render.register
def _(data: ColumnMarginals) -> Figure:
    fig = Figure()
    draw_column_marginals(fig, data)
    return fig


@render.register
def _(data: ColumnPairs) -> Figure:
    fig = Figure()
    draw_column_pairs(fig, data)
    return fig


@render.register
def _(data: ColumnReconstructions) -> Figure:
    fig = Figure()
    draw_column_reconstructions(fig, data)
    return fig


@render.register
def _(data: ElboChart) -> Figure:
    fig = Figure()
    draw_elbo_chart(fig, data)
    return fig


@render.register
def _(data: LayerKL) -> Figure:
    fig = Figure()
    draw_layer_kls(fig, data)
    return fig
