"""Drawing a hierarchical model's per-layer KL (`vaelab.viz.layers.LayerKL`) on a matplotlib figure."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaelab.diagnostics import active_units_rule
from vaelab.viz.layers import LayerKL


def draw_layer_kls(fig: Figure, data: LayerKL) -> None:
    """Left: each layer's KL per epoch (train solid, validation dashed, one colour per layer).
    Right: the test split's KL per layer with its active units (after `vaelab evaluate`), else
    the best validation epoch's."""
    fig.set_size_inches(10.5, 3.9)
    curves, bars = fig.subplots(1, 2)
    layers = data.train.shape[1]
    marker = "." if len(data.epoch) <= 30 else None  # (one epoch is a point, not a line)
    for i in range(layers):
        colour = f"C{i}"
        curves.plot(data.epoch, data.train[:, i], color=colour, marker=marker, label=f"z_{i + 1} train")
        curves.plot(
            data.epoch,
            data.valid[:, i],
            color=colour,
            marker=marker,
            linestyle="--",
            label=f"z_{i + 1} validation",
        )
    curves.axvline(data.best_epoch, color="0.5", linestyle=":", linewidth=1)
    curves.set_xlabel("epoch", fontsize=9)
    curves.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves.set_ylabel("KL of the layer, nats per example", fontsize=9)
    curves.set_title("per epoch (dotted: best validation epoch)", fontsize=10)
    curves.legend(fontsize=7, ncol=2)
    curves.grid(alpha=0.25, linewidth=0.5)
    curves.tick_params(labelsize=8)
    if data.test is not None:
        values, where = data.test, "test split (eval.json)"
    else:
        values, where = data.valid[list(data.epoch).index(data.best_epoch)], "best validation epoch"
    x = np.arange(1, layers + 1)
    bars.bar(x, values, color=[f"C{i}" for i in range(layers)], width=0.6)
    labels = [f"z_{i}" for i in x]
    if data.active_units is not None:
        labels = [
            f"{name}\n{a} of {data.units} active" for name, a in zip(labels, data.active_units, strict=True)
        ]
    bars.set_xticks(x)
    bars.set_xticklabels(labels, fontsize=8)
    for xi, v in zip(x, values, strict=True):
        bars.annotate(f"{v:.2f}", (xi, v), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
    title = f"{where}: total {values.sum():.2f} nats"
    if data.active_units is not None:
        title += f"\nactive units: {active_units_rule(data.active_threshold)}"
    bars.set_title(title, fontsize=9)
    bars.set_ylabel("KL of the layer, nats per example", fontsize=9)
    bars.grid(axis="y", alpha=0.25, linewidth=0.5)
    bars.tick_params(labelsize=8)
    fig.suptitle(data.title, fontsize=11)
    fig.tight_layout()
