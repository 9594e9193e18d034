"""Figures of the theory toolkit, drawn from the arrays that `vaelab.theory` computes.

Drawing uses matplotlib's object API on a `matplotlib.figure.Figure` made here: no pyplot and no
backend switch, so importing this module leaves a user's matplotlib state alone (a Figure renders
to PNG by itself).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from vaelab.theory.kl import KLDirectionsCurves, KLDirectionsResult, kl_directions_curves

__all__ = ["draw_kl_directions", "kl_directions_figure", "plot_kl_directions"]


def draw_kl_directions(ax: Axes, result: KLDirectionsResult, curves: KLDirectionsCurves) -> None:
    """p and its reverse- and forward-KL Gaussian fits on one axis, each fit labelled N(m, s^2), KL."""
    ax.plot(curves.x, curves.p, color="black", lw=2, label="p(x): Gaussian mixture")
    peak = float(curves.p.max())
    for fit, density, name, style in (
        (result.reverse, curves.reverse, "reverse KL(q||p): mode-seeking", "-"),
        (result.forward, curves.forward, "forward KL(p||q): mass-covering", "--"),
    ):
        peak = max(peak, float(density.max()))
        mean = round(fit.mean, 2) + 0.0  # no "-0.00"
        label = f"{name}, N({mean:.2f}, {fit.std:.2f}²), KL={fit.kl:.3f} nats"
        ax.plot(curves.x, density, ls=style, lw=2, label=label)
    ax.set_ylim(0, 1.45 * peak)  # room for the legend above the curves
    ax.set_title("Fitting one Gaussian q to a bimodal p: the direction of the KL decides")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)


def kl_directions_figure(result: KLDirectionsResult) -> Figure:
    """The forward vs reverse KL figure of `result` (from `kl_directions_experiment`), 7 x 4 inches."""
    fig = Figure(figsize=(7, 4))
    draw_kl_directions(fig.add_subplot(), result, kl_directions_curves(result))
    fig.tight_layout()
    return fig


def plot_kl_directions(result: KLDirectionsResult, path: str | Path) -> Path:
    """Draw `kl_directions_figure(result)` and save it as a PNG at `path`; returns the path."""
    path = Path(path)
    kl_directions_figure(result).savefig(path, format="png", dpi=100)
    return path
