"""Figures: what a model learned, as pictures.

Reconstructions, prior samples, the latent scatter of test-set posterior means, the decoded latent
grid (Kingma & Welling 2014, Figure 4), interpolations, latent traversals, training curves and the
ELBO decomposition. Each figure is split in two: a function that computes the arrays behind the
picture (a typed result, tested for content: shapes, ranges, latent coordinates, colours) and one
that draws it with matplotlib's Agg backend and writes the PNG atomically. `plot_run` / `plot_all`
draw them from a run directory.

Latent coordinates are in units of the prior's standard deviation (p(z) = N(0, I)); ELBO terms are
dataset means in nats per example.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from vaelab.distributions import draw  # noqa: E402
from vaelab.errors import UserError  # noqa: E402
from vaelab.runs import atomic_write, best_record  # noqa: E402

log = logging.getLogger(__name__)


def tile(
    images: Tensor | np.ndarray, ncols: int | None = None, pad: int = 2, pad_value: float = 0.0
) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) images -> one (rows*(H+pad)-pad, cols*(W+pad)-pad[, 3]) array.

    Grey images (C = 1) give a 2-D array. Padding is background (0.0, drawn white by the
    inverted grey map `show_grid` uses), so digits stay separate without grid lines.
    """
    x = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise UserError(f"cannot tile images of shape {x.shape}: expected (N, C, H, W)")
    n, c, h, w = x.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    canvas = np.full((c, nrows * (h + pad) - pad, ncols * (w + pad) - pad), pad_value, dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        canvas[:, r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = x[i]
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)
    return path


def show_grid(canvas: np.ndarray, title: str, path: str | Path, cmap: str = "gray_r") -> Path:
    height, width = canvas.shape[:2]
    scale = 6.0 / max(height, width)
    fig, ax = plt.subplots(figsize=(max(3.0, width * scale), max(3.0, height * scale) + 0.5))
    ax.imshow(np.clip(canvas, 0, 1), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return save_figure(fig, path)


def as_images(x: Tensor, x_shape: tuple[int, ...]) -> Tensor:
    """Examples as (N, C, H, W) images; tabular data (N, D) are shown as a near-square strip."""
    if len(x_shape) == 3:
        return x.reshape(-1, *x_shape)
    d = math.prod(x_shape)
    side = math.ceil(math.sqrt(d))
    flat = torch.nn.functional.pad(x.reshape(-1, d), (0, side * side - d))
    return flat.reshape(-1, 1, side, side)


@torch.no_grad()
def prior_samples(model, n: int, *, mode: str = "mean", seed: int = 0) -> Tensor:
    """Decode z ~ p(z): the decoder mean E[x|z] (mode="mean") or a draw x ~ p(x|z) ("sample")."""
    generator = torch.Generator().manual_seed(seed)
    z = draw(model.prior(), (n,), generator)  # (n, Z)
    p_x_given_z = model.likelihood(z)
    if mode == "mean":
        return p_x_given_z.mean
    if mode == "sample":
        return draw(p_x_given_z, (), generator)
    raise UserError(f"--mode {mode!r} is not one of mean, sample")


@torch.no_grad()
def reconstructions(model, x: Tensor) -> Tensor:
    """Decoder mean at the posterior mean code: E[x | z = E_q[z|x]], shape of x."""
    return model.likelihood(model.posterior(x).mean).mean


PRIOR_NAMES = {"normal": "N(0, I)", "mog": "a learned Gaussian mixture", "vamp": "the VampPrior"}


def sample_title(model, n: int, mode: str) -> str:
    prior = PRIOR_NAMES.get(getattr(model.config, "prior", "normal"), "p(z)")
    if mode == "mean":
        return f"{n} prior samples z ~ {prior}, each shown as the decoder mean E[x|z]"
    family = "Bernoulli" if getattr(model.config, "likelihood", "") == "bernoulli" else "Gaussian"
    return f"{n} prior samples z ~ {prior}, each shown as one {family} draw x ~ p(x|z)"


def plot_prior_samples(model, path: str | Path, n: int = 64, *, mode: str = "mean", seed: int = 0) -> Path:
    x = prior_samples(model, n, mode=mode, seed=seed)
    return show_grid(tile(as_images(x, model.x_shape)), sample_title(model, n, mode), path)


def reconstruction_rows(model, x: Tensor, ncols: int = 8) -> Tensor:
    """Originals over their reconstructions: (N, *x_shape) -> (2 * ceil(N / ncols) * ncols, C, H, W).

    Rows alternate: `ncols` originals, then their decoder means E[x | z = E_q[z|x]] (not samples);
    a last, shorter pair of rows is padded with blank (0) images.
    """
    images = as_images(x, model.x_shape)
    recon = as_images(reconstructions(model, x), model.x_shape)
    rows = []
    for start in range(0, len(images), ncols):
        rows += [images[start : start + ncols], recon[start : start + ncols]]
    return torch.cat([torch.cat([r, r.new_zeros(ncols - len(r), *r.shape[1:])]) for r in rows])


def plot_reconstructions(model, x: Tensor, path: str | Path) -> Path:
    """Originals (odd rows) above their reconstructions (even rows), 8 per row."""
    ncols = min(8, len(x))
    pairs = reconstruction_rows(model, x, ncols)
    h, w = pairs.shape[-2:]
    canvas = tile(pairs, ncols)
    fig, ax = plt.subplots(figsize=(0.75 * ncols + 1.8, 0.75 * len(pairs) / ncols + 0.8))
    ax.imshow(np.clip(canvas, 0, 1), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    nrows = len(pairs) // ncols
    ax.set_yticks([i * (h + 2) + (h - 1) / 2 for i in range(nrows)])
    ax.set_yticklabels(
        ["original" if i % 2 == 0 else "E[x | z = E_q[z|x]]" for i in range(nrows)], fontsize=8
    )
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(
        f"{len(x)} images over their reconstructions (decoder mean at the posterior mean)", fontsize=10
    )
    return save_figure(fig, path)


# ----------------------------------------------------------------------------- latent statistics


@torch.no_grad()
def posterior_means(model, x: Tensor, batch_size: int = 1000) -> Tensor:
    """E_q[z|x] for every row of x: (N, *x_shape) -> (N, Z). For an AE this is the code f(x)."""
    return torch.cat([model.posterior(chunk).mean for chunk in x.split(batch_size)])


@dataclass(frozen=True)
class LatentStatistics:
    """Per-latent-dimension summaries of q(z|x) over a data set of `num_examples` rows.

    kl_per_dim: (Z,) mean over x of KL(q(z_d|x) || N(0, 1)) in nats per example (None for an AE,
    whose point-mass code has no finite KL); their sum is the data set's mean KL term.
    posterior_mean_variance: (Z,) Var_x(E_q[z_d|x]); a dimension is active when it exceeds
    `threshold` (Burda et al. 2015, Section 5.2), counted in `active_units`.
    """

    kl_per_dim: np.ndarray | None
    posterior_mean_variance: np.ndarray
    active_units: int
    threshold: float
    num_examples: int


ACTIVE_THRESHOLD = 0.01
"""A latent dim is active when Var_x(E_q[z_d|x]) exceeds this (Burda et al. 2015, Section 5.2)."""


@torch.no_grad()
def latent_statistics(
    model, x: Tensor, *, threshold: float = ACTIVE_THRESHOLD, batch_size: int = 1000
) -> LatentStatistics:
    """Closed-form per-dim KL of a diagonal Gaussian q against N(0, 1) and the active units.

    KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 2 log s - 1) / 2 per dimension (Kingma & Welling 2014,
    Appendix B), averaged over the rows of x: (N, *x_shape) -> (Z,). Computed in float64.
    """
    kl_sum, means = None, []
    for chunk in x.split(batch_size):
        q_z_given_x = model.posterior(chunk)
        means.append(q_z_given_x.mean.double())  # (B, Z)
        base = getattr(q_z_given_x, "base_dist", None)
        if getattr(model, "deterministic", False) or not isinstance(base, torch.distributions.Normal):
            continue
        loc, scale = base.loc.double(), base.scale.double()  # (B, Z)
        kl = 0.5 * (loc.square() + scale.square() - 2 * scale.log() - 1.0)  # (B, Z)
        kl_sum = kl.sum(0) if kl_sum is None else kl_sum + kl.sum(0)
    m = torch.cat(means)  # (N, Z)
    variance = m.var(0) if len(m) > 1 else torch.zeros(m.shape[1], dtype=torch.float64)
    kl_per_dim = None if kl_sum is None else (kl_sum / len(m)).numpy()
    return LatentStatistics(
        kl_per_dim, variance.numpy(), int((variance > threshold).sum()), threshold, len(m)
    )


# -------------------------------------------------------------------------------- latent scatter


@dataclass(frozen=True)
class LatentScatter:
    """The points of a latent scatter plot and the colour of each.

    points: (N, 2) posterior means E_q[z|x] (Z = 2), their first two principal components (Z > 2,
    `projection` "pca"), or (z_1, label) for Z = 1. labels: (N,) int or None; colors: (N, 4) RGBA,
    one colour per class (`class_colors[k]` for class `classes[k]`), a single colour without labels.
    """

    points: np.ndarray
    labels: np.ndarray | None
    colors: np.ndarray
    classes: tuple[int, ...]
    class_colors: np.ndarray
    axis_labels: tuple[str, str]
    projection: str
    explained_variance_ratio: tuple[float, float] | None
    latent_dim: int


def class_palette(num_classes: int) -> np.ndarray:
    """(K, 4) RGBA colours, distinct for K <= 20 (tab10 / tab20), sampled from turbo beyond."""
    if num_classes <= 20:
        rgb = np.asarray(
            plt.get_cmap("tab10" if num_classes <= 10 else "tab20").colors[:num_classes], dtype=float
        )
        return np.column_stack([rgb, np.ones(num_classes)])
    return plt.get_cmap("turbo")(np.linspace(0.0, 1.0, num_classes))


SINGLE_COLOR = np.array([0.12, 0.47, 0.71, 1.0])  # tab10 blue, for unlabeled data

LATENT_UNIT = "prior s.d. units"


def latent_scatter(model, x: Tensor, labels: Tensor | np.ndarray | None = None) -> LatentScatter:
    """Posterior means of x: (N, *x_shape), projected to 2-D by PCA when Z > 2, coloured by label."""
    from sklearn.decomposition import PCA

    z = posterior_means(model, x).double().numpy()  # (N, Z)
    n, latent_dim = z.shape
    y = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if y is not None and len(y) != n:
        raise UserError(f"latent scatter: {n} examples but {len(y)} labels")
    ratio = None
    if latent_dim == 2:
        points, projection = z, "none"
        axis = (f"$z_1$ = E_q[z_1|x] ({LATENT_UNIT})", f"$z_2$ = E_q[z_2|x] ({LATENT_UNIT})")
    elif latent_dim == 1:
        second = y.astype(float) if y is not None else np.zeros(n)
        points, projection = np.stack([z[:, 0], second], 1), "1-d"
        axis = (
            f"$z_1$ = E_q[z_1|x] ({LATENT_UNIT})",
            "label" if y is not None else "(Z = 1: no second axis)",
        )
    else:
        pca = PCA(n_components=2, random_state=0).fit(z)
        points, projection = pca.transform(z), "pca"
        ratio = tuple(float(r) for r in pca.explained_variance_ratio_)
        axis = tuple(
            f"PC {i + 1} of the {latent_dim}-D posterior means ({100 * r:.0f}% of their variance)"
            for i, r in enumerate(ratio)
        )
    if y is None:
        classes: tuple[int, ...] = ()
        class_colors = SINGLE_COLOR[None]
        colors = np.repeat(SINGLE_COLOR[None], n, 0)
    else:
        classes = tuple(int(c) for c in np.unique(y))
        class_colors = class_palette(len(classes))
        colors = class_colors[np.searchsorted(classes, y)]
    return LatentScatter(points, y, colors, classes, class_colors, axis, projection, ratio, latent_dim)


def draw_latent_scatter(
    ax, scatter: LatentScatter, title: str, *, box: tuple[float, ...] | None = None
) -> None:
    """Draw `scatter` on `ax`; `box` (z1min, z1max, z2min, z2max) outlines a decoded grid's range."""
    p = scatter.points
    size = 8 if len(p) <= 2000 else 3
    ax.scatter(p[:, 0], p[:, 1], c=scatter.colors, s=size, alpha=0.75, linewidths=0, rasterized=True)
    if scatter.classes:
        handles = [
            plt.Line2D([], [], marker="o", linestyle="", color=color, markersize=6, label=str(c))
            for c, color in zip(scatter.classes, scatter.class_colors, strict=True)
        ]
        ax.legend(
            handles=handles,
            title="label",
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
            plt.Rectangle(
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
    ax.set_xlabel(scatter.axis_labels[0], fontsize=9)
    ax.set_ylabel(scatter.axis_labels[1], fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25, linewidth=0.5)
    if scatter.projection == "none":
        ax.set_aspect("equal", adjustable="datalim")


def scatter_title(scatter: LatentScatter, split: str = "test") -> str:
    what = (
        "posterior means E_q[z|x]" if scatter.projection != "pca" else "posterior means E_q[z|x], PCA to 2-D"
    )
    colour = "coloured by label" if scatter.classes else "(no labels)"
    return f"{split}-set {what}, {colour}, N = {len(scatter.points)}"


def plot_latent_scatter(
    scatter: LatentScatter,
    path: str | Path,
    title: str | None = None,
    *,
    box: tuple[float, ...] | None = None,
) -> Path:
    fig, ax = plt.subplots(figsize=(6.8, 5.6))
    draw_latent_scatter(ax, scatter, title or scatter_title(scatter), box=box)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------- latent grid


def quantile_coordinates(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n probabilities p_i = (i + 1/2) / n and the standard-normal quantiles Phi^-1(p_i).

    Kingma & Welling (2014), Figure 4: "linearly spaced coordinates on the unit square were
    transformed through the inverse CDF of the Gaussian". The centres of n equal-mass bins avoid the
    infinite quantiles at 0 and 1, so each grid cell stands for 1/n of the prior mass per axis.
    """
    if n < 2:
        raise UserError(f"a latent grid needs n >= 2 points per axis, got {n}")
    p = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    z = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0).icdf(p)
    return p.numpy(), z.numpy()


@dataclass(frozen=True)
class LatentGrid:
    """An n x n grid of latent points and their decoder means, laid out as one picture.

    z: (n, n, Z) latent points; picture row i, column j holds z1 = z1_values[j] and
    z2 = z2_values[n - 1 - i] in latent dims `dims` (z2 grows upwards, as on a plot), the other
    dims at `base`. x_mean: (n * n, *x_shape) decoder means E[x|z], row-major; canvas: the tiled picture.
    probabilities: (n,) the prior CDF values of the coordinates for a quantile grid, else None.
    """

    z: Tensor
    z1_values: np.ndarray
    z2_values: np.ndarray
    x_mean: Tensor
    canvas: np.ndarray
    dims: tuple[int, int]
    spacing: str
    probabilities: np.ndarray | None
    base_description: str
    cell_size: tuple[int, int]
    pad: int


@torch.no_grad()
def latent_grid(
    model,
    n: int = 21,
    *,
    z_range: tuple[float, float, float, float] | None = None,
    dims: tuple[int, int] = (0, 1),
    base: Tensor | None = None,
    base_description: str = "0",
    pad: int = 0,
) -> LatentGrid:
    """Decode an n x n grid of latent points (Kingma & Welling 2014, Figure 4).

    z_range None: both axes at the Gaussian quantiles of `quantile_coordinates(n)`; else
    (z1min, z1max, z2min, z2max) with n evenly spaced values per axis, ends included. For Z > 2 the
    dims outside `dims` are held at `base` (Z,), zeros by default (the prior mean).
    """
    latent_dim = model.latent_dim
    if latent_dim < 2:
        raise UserError("a latent grid needs a latent size of at least 2; use --kind traversals for Z = 1")
    d1, d2 = dims
    if d1 == d2 or not (0 <= d1 < latent_dim and 0 <= d2 < latent_dim):
        raise UserError(f"--dims {d1},{d2}: need two different dims in 0..{latent_dim - 1}")
    if z_range is None:
        probabilities, z1_values = quantile_coordinates(n)
        z2_values, spacing = z1_values.copy(), "quantile"
    else:
        z1min, z1max, z2min, z2max = z_range
        if not (z1min < z1max and z2min < z2max):
            raise UserError(
                f"--range {z1min},{z1max},{z2min},{z2max}: each minimum must be below its maximum"
            )
        probabilities, spacing = None, "range"
        z1_values, z2_values = np.linspace(z1min, z1max, n), np.linspace(z2min, z2max, n)
    base = torch.zeros(latent_dim) if base is None else base.detach().float().reshape(latent_dim)
    z = base.repeat(n, n, 1)  # (n, n, Z)
    z[:, :, d1] = torch.as_tensor(z1_values, dtype=torch.float32)[None, :]
    z[:, :, d2] = torch.as_tensor(z2_values[::-1].copy(), dtype=torch.float32)[:, None]  # top row: largest z2
    x_mean = model.likelihood(z.reshape(n * n, latent_dim)).mean  # (n*n, *x_shape)
    images = as_images(x_mean, model.x_shape)
    canvas = tile(images, n, pad=pad)
    return LatentGrid(
        z,
        z1_values,
        z2_values,
        x_mean,
        canvas,
        (d1, d2),
        spacing,
        probabilities,
        base_description,
        tuple(images.shape[-2:]),
        pad,
    )


def grid_title(grid: LatentGrid, latent_dim: int) -> str:
    n = len(grid.z1_values)
    d1, d2 = grid.dims
    if grid.spacing == "quantile":
        where = (
            f"at Gaussian quantiles $\\Phi^{{-1}}(p)$, p = {grid.probabilities[0]:.3f} ... "
            f"{grid.probabilities[-1]:.3f}"
        )
    else:
        where = (
            f"$z_{{{d1 + 1}}}$ in [{grid.z1_values[0]:g}, {grid.z1_values[-1]:g}], "
            f"$z_{{{d2 + 1}}}$ in [{grid.z2_values[0]:g}, {grid.z2_values[-1]:g}]"
        )
    title = f"decoder means E[x|z] on a {n}x{n} latent grid {where}"
    if latent_dim > 2:
        title += f"\nother {latent_dim - 2} latent dims held at {grid.base_description}"
    return title


def draw_latent_grid(ax, grid: LatentGrid, title: str) -> None:
    """The tiled decoder means with the latent coordinates of some cells on the axes."""
    n = len(grid.z1_values)
    h, w = grid.cell_size
    ax.imshow(np.clip(grid.canvas, 0, 1), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    step = max(1, (n - 1) // 4)
    ticks = sorted(set(range(0, n, step)) | {n - 1})
    ax.set_xticks([j * (w + grid.pad) + (w - 1) / 2 for j in ticks])
    ax.set_xticklabels([f"{grid.z1_values[j]:.2f}" for j in ticks], fontsize=8)
    ax.set_yticks([i * (h + grid.pad) + (h - 1) / 2 for i in ticks])
    ax.set_yticklabels([f"{grid.z2_values[n - 1 - i]:.2f}" for i in ticks], fontsize=8)
    d1, d2 = grid.dims
    ax.set_xlabel(f"$z_{{{d1 + 1}}}$ ({LATENT_UNIT})", fontsize=9)
    ax.set_ylabel(f"$z_{{{d2 + 1}}}$ ({LATENT_UNIT})", fontsize=9)
    ax.set_title(title, fontsize=10)
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_latent_grid(grid: LatentGrid, path: str | Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(7.6, 8.0))
    draw_latent_grid(ax, grid, title)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------- interpolation


def interpolate(z_a: Tensor, z_b: Tensor, t: Tensor, method: str = "linear") -> Tensor:
    """Points on a path from z_a to z_b: (Z,), (Z,), t (T,) in [0, 1] -> (T, Z).

    linear:    z(t) = (1 - t) z_a + t z_b.
    spherical: z(t) = sin((1 - t) w) / sin(w) z_a + sin(t w) / sin(w) z_b, cos(w) = <z_a, z_b> /
    (|z_a| |z_b|) (Shoemake 1985; White 2016, "Sampling generative networks"), which keeps the norm
    of equal-norm codes, where a linear path passes through the low-density shell interior of a
    high-dimensional Gaussian. Falls back to linear for (anti)parallel or zero codes.
    """
    t = t.reshape(-1, 1).to(z_a.dtype)  # (T, 1)
    if method == "linear":
        return (1 - t) * z_a + t * z_b
    if method != "spherical":
        raise UserError(f"--method {method!r} is not one of linear, spherical")
    norms = z_a.norm() * z_b.norm()
    if norms == 0:
        return (1 - t) * z_a + t * z_b
    omega = torch.arccos(torch.clamp(torch.dot(z_a, z_b) / norms, -1.0, 1.0))
    if torch.sin(omega).abs() < 1e-6:
        return (1 - t) * z_a + t * z_b
    return (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / torch.sin(omega)


@dataclass(frozen=True)
class Interpolations:
    """Paths in latent space between pairs of images, decoded.

    t: (T,) path parameters; z: (P, T, Z) latent points; x_a, x_b: (P, *x_shape) the endpoint
    images; x_mean: (P, T, *x_shape) decoder means along each path; indices: (P, 2) rows of the split.
    """

    t: np.ndarray
    z: Tensor
    x_a: Tensor
    x_b: Tensor
    x_mean: Tensor
    method: str
    indices: tuple[tuple[int, int], ...]


@torch.no_grad()
def interpolations(
    model,
    x_a: Tensor,
    x_b: Tensor,
    n: int = 10,
    *,
    method: str = "linear",
    indices: tuple[tuple[int, int], ...] = (),
) -> Interpolations:
    """Decode the path between the posterior means of x_a[i] and x_b[i]: (P, *x_shape) each."""
    if n < 2:
        raise UserError(f"an interpolation needs n >= 2 points, got {n}")
    t = torch.linspace(0.0, 1.0, n)
    z_a, z_b = posterior_means(model, x_a), posterior_means(model, x_b)  # (P, Z)
    z = torch.stack([interpolate(a, b, t, method) for a, b in zip(z_a, z_b, strict=True)])  # (P, T, Z)
    x_mean = model.likelihood(z).mean  # (P, T, *x_shape)
    return Interpolations(t.numpy(), z, x_a, x_b, x_mean, method, indices)


def pick_pairs(labels: Tensor | None, num_examples: int, num_pairs: int, seed: int) -> list[tuple[int, int]]:
    """`num_pairs` seeded random pairs of row indices, of different labels where labels exist."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_examples, generator=generator).tolist()
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    for i in order:
        if len(pairs) == num_pairs or i in used:
            continue
        for j in order:
            if j != i and j not in used and (labels is None or int(labels[i]) != int(labels[j])):
                pairs.append((i, j))
                used |= {i, j}
                break
    return pairs


def plot_interpolations(
    interp: Interpolations, x_shape: tuple[int, ...], path: str | Path, split: str = "test"
):
    """One row per pair: image A | decoder means along the path | image B."""
    p, t = len(interp.x_a), len(interp.t)
    rows = []
    for i in range(p):
        rows += [interp.x_a[i : i + 1], interp.x_mean[i], interp.x_b[i : i + 1]]
    images = as_images(torch.cat([r.reshape(-1, *x_shape) for r in rows]), x_shape)
    canvas = tile(images, t + 2, pad=2)
    h, w = images.shape[-2:]
    fig, ax = plt.subplots(figsize=(min(12.0, 0.62 * (t + 2) + 1.0), 0.62 * p + 1.4))
    ax.imshow(np.clip(canvas, 0, 1), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    labels = ["image A"] + [f"{v:.2f}" for v in interp.t] + ["image B"]
    ax.set_xticks([j * (w + 2) + (w - 1) / 2 for j in range(t + 2)])
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_yticks([i * (h + 2) + (h - 1) / 2 for i in range(p)])
    ax.set_yticklabels([f"#{a} to #{b}" for a, b in interp.indices] if interp.indices else [], fontsize=7)
    path_formula = (
        "the line z(t) = (1-t) z_A + t z_B" if interp.method == "linear" else "the great-circle path (slerp)"
    )
    ax.set_xlabel("path parameter t (z_A, z_B: posterior means of images A, B)", fontsize=8)
    ax.set_title(
        f"{interp.method} interpolation between {split} images\ndecoder means E[x|z(t)] along {path_formula}",
        fontsize=9,
    )
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------ traversals


@dataclass(frozen=True)
class Traversals:
    """Decoder means as one latent dim at a time sweeps `values`, the others held at `base`.

    dims: the latent dims shown, one per row, in decreasing order of `score` (mean KL per dim in
    nats for a VAE; Var_x of the code for an AE, named by `score_name`); values: (S,) the values
    the dim takes (prior s.d. units); z: (R, S, Z); x_mean: (R, S, *x_shape); base: (Z,).
    """

    dims: tuple[int, ...]
    score: np.ndarray
    score_name: str
    values: np.ndarray
    z: Tensor
    x_mean: Tensor
    base: Tensor
    base_description: str
    latent_dim: int


@torch.no_grad()
def latent_traversals(
    model,
    x: Tensor,
    *,
    steps: int = 9,
    span: float = 3.0,
    base: Tensor | None = None,
    base_description: str = "0",
    max_rows: int = 10,
    stats: LatentStatistics | None = None,
) -> Traversals:
    """Rows z_d in linspace(-span, span, steps) for the `max_rows` dims of largest mean KL over x."""
    stats = stats or latent_statistics(model, x)
    if stats.kl_per_dim is not None:
        score_all, score_name = stats.kl_per_dim, "KL"
    else:
        score_all, score_name = stats.posterior_mean_variance, "Var_x(z)"
    order = np.argsort(-score_all, kind="stable")[:max_rows]
    values = torch.linspace(-span, span, steps)
    base = torch.zeros(model.latent_dim) if base is None else base.detach().float().reshape(-1)
    z = base.repeat(len(order), steps, 1)  # (R, S, Z)
    for row, d in enumerate(order):
        z[row, :, d] = values
    x_mean = model.likelihood(z).mean  # (R, S, *x_shape)
    return Traversals(
        tuple(int(d) for d in order),
        score_all[order],
        score_name,
        values.numpy(),
        z,
        x_mean,
        base,
        base_description,
        model.latent_dim,
    )


def plot_traversals(trav: Traversals, x_shape: tuple[int, ...], path: str | Path) -> Path:
    rows, steps = len(trav.dims), len(trav.values)
    images = as_images(trav.x_mean.reshape(-1, *x_shape), x_shape)
    canvas = tile(images, steps, pad=2)
    h, w = images.shape[-2:]
    fig, ax = plt.subplots(figsize=(0.62 * steps + 2.6, 0.62 * rows + 1.5))
    ax.imshow(np.clip(canvas, 0, 1), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([j * (w + 2) + (w - 1) / 2 for j in range(steps)])
    ax.set_xticklabels([f"{v:g}" for v in trav.values], fontsize=8)
    ax.set_yticks([i * (h + 2) + (h - 1) / 2 for i in range(rows)])
    unit = "nats" if trav.score_name == "KL" else LATENT_UNIT + "$^2$"
    ax.set_yticklabels(
        [
            f"$z_{{{d + 1}}}$  {trav.score_name} {s:.2f} {unit}"
            for d, s in zip(trav.dims, trav.score, strict=True)
        ],
        fontsize=8,
    )
    ax.set_xlabel(f"value of the traversed latent dim ({LATENT_UNIT})", fontsize=9)
    sort = (
        "mean KL(q(z_d|x) || N(0,1)) over the test set"
        if trav.score_name == "KL"
        else "variance of the AE code over the test set (an AE has no KL)"
    )
    shown = f"top {rows} of {trav.latent_dim} dims" if rows < trav.latent_dim else f"all {rows} dims"
    ax.set_title(
        f"latent traversals, decoder means E[x|z]: one row per latent dim ({shown}),\nsorted by {sort};"
        f" other dims at {trav.base_description}",
        fontsize=9,
    )
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    return save_figure(fig, path)


# ------------------------------------------------------------------------------- training curves


@dataclass(frozen=True)
class TrainingCurves:
    """Per-epoch dataset means from metrics.jsonl, nats per example, each (E,)."""

    epoch: np.ndarray
    train_elbo: np.ndarray
    valid_elbo: np.ndarray
    train_log_p_x_given_z: np.ndarray
    valid_log_p_x_given_z: np.ndarray
    train_kl: np.ndarray
    valid_kl: np.ndarray
    best_epoch: int
    deterministic: bool


def training_curves(metrics: list[dict], *, deterministic: bool = False) -> TrainingCurves:
    """Arrays of the per-epoch records that `vaelab.train` writes (keys *_nats)."""
    if not metrics:
        raise UserError("no training metrics: metrics.jsonl is missing or empty")

    def column(key: str) -> np.ndarray:
        return np.array([float(r[key]) for r in metrics])

    return TrainingCurves(
        column("epoch").astype(int),
        column("train_elbo_nats"),
        column("valid_elbo_nats"),
        column("train_log_p_x_given_z_nats"),
        column("valid_log_p_x_given_z_nats"),
        column("train_kl_nats"),
        column("valid_kl_nats"),
        int(best_record(metrics)["epoch"]),  # the epoch selection kept (on its bound, maybe not the ELBO)
        deterministic,
    )


def plot_training_curves(curves: TrainingCurves, path: str | Path, title: str = "") -> Path:
    """Three panels (ELBO, reconstruction term, KL) for a VAE; one for an AE, which trains on the
    reconstruction term alone (its logged ELBO is that term and its KL is zero by construction)."""
    if curves.deterministic:
        panels = [
            (
                "reconstruction term log p(x | z = f(x)): an AE has no KL term and no ELBO",
                curves.train_log_p_x_given_z,
                curves.valid_log_p_x_given_z,
            )
        ]
    else:
        panels = [
            ("ELBO (higher is better)", curves.train_elbo, curves.valid_elbo),
            (
                "reconstruction term E_q[log p(x|z)]",
                curves.train_log_p_x_given_z,
                curves.valid_log_p_x_given_z,
            ),
            ("KL(q(z|x) || p(z))", curves.train_kl, curves.valid_kl),
        ]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.35 * len(panels) + (3.0 if len(panels) == 1 else 0), 3.8), squeeze=False
    )
    axes = axes[0]
    for ax, (name, train_values, valid_values) in zip(axes, panels, strict=True):
        ax.plot(curves.epoch, train_values, label="train (running mean over the epoch)", color="C0")
        ax.plot(curves.epoch, valid_values, label="validation (end of epoch)", color="C1")
        ax.axvline(curves.best_epoch, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch", fontsize=9)
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
    fig.suptitle(title or "training curves", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------------- ELBO decomposition


DECOMPOSITION_KEYS = ("decomposition", "elbo_decomposition")


def _evaluation_value(evaluation: dict, key: str):
    """A key of eval.json, at the top level or inside a nested decomposition section."""
    if evaluation.get(key) is not None:
        return evaluation[key]
    for section in DECOMPOSITION_KEYS:
        nested = evaluation.get(section)
        if isinstance(nested, dict) and nested.get(key) is not None:
            return nested[key]
    return None


@dataclass(frozen=True)
class ElboChart:
    """The bars of the ELBO-decomposition figure, nats per example (dataset means).

    terms: (name, value) pairs; the identities they illustrate are
    ELBO = E_q[log p(x|z)] - KL(q || p(z)) = E_q[log p(x, z)] + H(q) and log p(x) = ELBO + gap.
    kl_per_dim: (Z,) mean KL per latent dim in nats, or None; kl_per_dim_source says where it came from.
    """

    terms: tuple[tuple[str, float], ...]
    kl_per_dim: np.ndarray | None
    kl_per_dim_source: str
    active_units: int | None
    active_threshold: float | None
    split: str
    num_examples: int


def elbo_chart(evaluation: dict, stats: LatentStatistics | None = None) -> ElboChart | None:
    """Bars from an eval.json dict; None for an AE (no ELBO). Per-dim KL from the evaluation when it
    has one (`kl_per_dim`), else from `stats` (the closed form over the same split), else absent."""
    elbo = evaluation.get("elbo")
    if elbo is None:
        return None
    terms = [
        ("E_q[log p(x|z)]", evaluation["log_p_x_given_z"]),
        ("-KL(q(z|x) || p(z))", -evaluation["kl"]),
        ("ELBO", elbo),
    ]
    log_p_xz, entropy = _evaluation_value(evaluation, "log_p_xz"), _evaluation_value(evaluation, "entropy")
    if log_p_xz is not None and entropy is not None:
        terms += [("E_q[log p(x, z)]", log_p_xz), ("H(q(z|x))", entropy)]
    if evaluation.get("log_px") is not None:
        terms += [
            (f"log p(x), IS k={evaluation.get('k')}", evaluation["log_px"]),
            ("gap log p(x) - ELBO\n(≈ KL(q(z|x) || p(z|x)))", evaluation["log_px"] - elbo),
        ]
    kl_dims = _evaluation_value(evaluation, "kl_per_dim")
    active = _evaluation_value(evaluation, "active_units")
    threshold = _evaluation_value(evaluation, "active_threshold") or ACTIVE_THRESHOLD
    source = "the evaluation (eval.json)"
    if kl_dims is None and stats is not None and stats.kl_per_dim is not None:
        kl_dims, source = (
            stats.kl_per_dim,
            f"the closed form over the {evaluation.get('split', 'test')} split",
        )
        active, threshold = stats.active_units, stats.threshold
    return ElboChart(
        tuple((name, float(v)) for name, v in terms),
        None if kl_dims is None else np.asarray(kl_dims, dtype=float),
        source if kl_dims is not None else "",
        active,
        threshold,
        evaluation.get("split", "test"),
        int(evaluation.get("num_examples", 0)),
    )


def plot_elbo_decomposition(chart: ElboChart, path: str | Path) -> Path:
    panels = 2 if chart.kl_per_dim is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels + 0.6, 3.9), squeeze=False)
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
    ax.set_title(f"ELBO terms on the {chart.split} split (N = {chart.num_examples})", fontsize=10)
    ax.grid(axis="x", alpha=0.25, linewidth=0.5)
    if chart.kl_per_dim is not None:
        ax = axes[0, 1]
        kl = chart.kl_per_dim
        dims = np.arange(1, len(kl) + 1)
        ax.bar(dims, kl, color="C1", width=0.8 if len(kl) > 4 else 0.5)
        ax.set_xlabel("latent dim d", fontsize=9)
        ax.set_ylabel("mean KL(q(z_d|x) || N(0, 1)), nats", fontsize=9)
        if len(kl) <= 16:
            ax.set_xticks(dims)
        title = f"KL per latent dim, total {kl.sum():.2f} nats"
        if chart.active_units is not None:
            rule = f"Var_x E_q[z_d] > {chart.active_threshold:g}"
            title += f"\nactive units ({rule}): {chart.active_units} of {len(kl)}"
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.25, linewidth=0.5)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------------------ figures of a run


@dataclass(frozen=True)
class FigureOptions:
    """What `plot_run` draws. n: images per figure (grid points per axis for `grid`, path points for
    `interpolation`), None for each kind's default; base: row of `split` whose posterior mean holds
    the latent dims a grid or traversal does not vary (None: the prior mean 0)."""

    split: str = "test"
    seed: int = 0
    n: int | None = None
    z_range: tuple[float, float, float, float] | None = None
    dims: tuple[int, int] | None = None
    base: int | None = None
    mode: str = "mean"
    method: str = "linear"


DEFAULT_N = {"reconstructions": 32, "samples": 64, "grid": 21, "interpolation": 10, "traversals": 9}


class _Run:
    """A run's model, config, data and evaluation, loaded once and shared by the figure makers."""

    def __init__(self, run_dir: Path, options: FigureOptions) -> None:
        from vaelab.data import load_data
        from vaelab.runs import check_run_dir, load_model, read_config

        self.dir = check_run_dir(run_dir)
        self.options = options
        self.model = load_model(self.dir)
        self.config = read_config(self.dir)
        self.splits = load_data(self.config.data)
        self.x = self.splits.split(options.split)
        self.labels = self.splits.labels(options.split)
        self._stats: LatentStatistics | None = None

    @property
    def stats(self) -> LatentStatistics:
        if self._stats is None:
            self._stats = latent_statistics(self.model, self.x)
        return self._stats

    def n(self, kind: str) -> int:
        n = self.options.n or DEFAULT_N[kind]
        if n < 1:
            raise UserError(f"--n must be >= 1, got {n}")
        return n

    def base(self) -> tuple[Tensor | None, str]:
        index = self.options.base
        if index is None:
            return None, "0 (the prior mean)"
        if not 0 <= index < len(self.x):
            raise UserError(f"--base {index}: the {self.options.split} split has rows 0..{len(self.x) - 1}")
        return posterior_means(self.model, self.x[index : index + 1])[0], (
            f"the posterior mean of {self.options.split} image #{index}"
        )

    def grid_dims(self) -> tuple[int, int]:
        if self.options.dims is not None:
            return self.options.dims
        if self.model.latent_dim <= 2:
            return (0, 1)
        score = (
            self.stats.kl_per_dim if self.stats.kl_per_dim is not None else self.stats.posterior_mean_variance
        )
        top = np.argsort(-score, kind="stable")[:2]
        return int(top[0]), int(top[1])


def _reconstructions(run: _Run, path: Path) -> Path:
    generator = torch.Generator().manual_seed(run.options.seed)
    # a random subset: test files are often sorted by class, so a prefix would show one digit
    pick = torch.randperm(len(run.x), generator=generator)[: run.n("reconstructions")]
    return plot_reconstructions(run.model, run.x[pick], path)


def _samples(run: _Run, path: Path) -> Path:
    return plot_prior_samples(run.model, path, run.n("samples"), mode=run.options.mode, seed=run.options.seed)


def _scatter(run: _Run, path: Path) -> Path:
    scatter = latent_scatter(run.model, run.x, run.labels)
    return plot_latent_scatter(scatter, path, scatter_title(scatter, run.options.split))


def _grid(run: _Run, path: Path) -> Path:
    base, where = run.base()
    grid = latent_grid(
        run.model,
        run.n("grid"),
        z_range=run.options.z_range,
        dims=run.grid_dims(),
        base=base,
        base_description=where,
    )
    return plot_latent_grid(grid, path, grid_title(grid, run.model.latent_dim))


def _interpolation(run: _Run, path: Path) -> Path:
    pairs = pick_pairs(run.labels, len(run.x), 4, run.options.seed)
    if not pairs:
        raise UserError(f"interpolation needs two {run.options.split} images of different labels")
    a, b = zip(*pairs, strict=True)
    interp = interpolations(
        run.model,
        run.x[list(a)],
        run.x[list(b)],
        run.n("interpolation"),
        method=run.options.method,
        indices=tuple(pairs),
    )
    return plot_interpolations(interp, run.model.x_shape, path, run.options.split)


def _traversals(run: _Run, path: Path) -> Path:
    base, where = run.base()
    trav = latent_traversals(
        run.model, run.x, steps=run.n("traversals"), base=base, base_description=where, stats=run.stats
    )
    return plot_traversals(trav, run.model.x_shape, path)


def _curves(run: _Run, path: Path) -> Path:
    from vaelab.runs import read_metrics

    curves = training_curves(read_metrics(run.dir), deterministic=run.model.deterministic)
    what = "AE" if run.model.deterministic else "VAE"
    title = (
        f"training curves of run {run.dir.name} ({what}, Z = {run.model.latent_dim}, "
        f"{run.config.data.source}); dotted line: best validation epoch"
    )
    return plot_training_curves(curves, path, title)


def _decomposition(run: _Run, path: Path) -> Path:
    from vaelab.runs import read_json

    eval_path = run.dir / "eval.json"
    if not eval_path.is_file():
        raise UserError(f"{eval_path}: not found; run `vaelab evaluate {run.dir}` first")
    chart = elbo_chart(read_json(eval_path), run.stats)
    if chart is None:
        raise UserError(f"{eval_path}: no ELBO to decompose (an autoencoder has none)")
    return plot_elbo_decomposition(chart, path)


FIGURES: dict[str, Callable[[_Run, Path], Path]] = {
    "reconstructions": _reconstructions,
    "samples": _samples,
    "scatter": _scatter,
    "grid": _grid,
    "interpolation": _interpolation,
    "traversals": _traversals,
    "curves": _curves,
    "decomposition": _decomposition,
}

DOCUMENTS_RANGE = (-10.0, 5.0, -5.0, 5.0)
"""z1 in [-10, 5], z2 in [-5, 5]: the latent range of the source documents' decoded grid."""

# kind="all": file name -> (figure kind, options changed for it)
ALL_FIGURES: dict[str, tuple[str, dict]] = {
    "curves.png": ("curves", {}),
    "reconstructions.png": ("reconstructions", {}),
    "samples.png": ("samples", {"mode": "mean"}),
    "samples-draw.png": ("samples", {"mode": "sample"}),
    "scatter.png": ("scatter", {}),
    "grid.png": ("grid", {}),
    "grid-wide.png": ("grid", {"z_range": DOCUMENTS_RANGE}),
    "interpolation.png": ("interpolation", {"method": "linear"}),
    "interpolation-spherical.png": ("interpolation", {"method": "spherical"}),
    "traversals.png": ("traversals", {}),
    "decomposition.png": ("decomposition", {}),
}


def plot_run(
    run_dir: str | Path, kind: str, path: str | Path, options: FigureOptions = FigureOptions()
) -> Path:
    """Draw one figure kind of a run into the PNG `path`."""
    if kind not in FIGURES:
        raise UserError(f"--kind {kind!r} is not one of {', '.join(FIGURES)}, all")
    return FIGURES[kind](_Run(Path(run_dir), options), Path(path))


def _has_elbo(run_dir: Path) -> bool:
    import json

    path = run_dir / "eval.json"
    try:
        return path.is_file() and json.loads(path.read_text()).get("elbo") is not None
    except (ValueError, AttributeError):
        return False


def plot_all(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    options: FigureOptions = FigureOptions(),
    *,
    only_missing: bool = False,
) -> dict[str, Path]:
    """Every figure of a run into out_dir (default RUN/figures), as named in `ALL_FIGURES`.

    A figure that does not apply (the ELBO decomposition of an AE, or before `vaelab evaluate`) is
    skipped with a log message. only_missing: keep PNGs that already exist.
    """
    import dataclasses

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "figures"
    written: dict[str, Path] = {}
    todo = {}
    for name, spec in ALL_FIGURES.items():
        if only_missing and (out_dir / name).is_file():
            written[name] = out_dir / name
        elif spec[0] == "decomposition" and not _has_elbo(run_dir):
            log.info("%s: skipped %s (no eval.json with an ELBO: an AE, or not evaluated yet)", run_dir, name)
        else:
            todo[name] = spec
    if not todo:
        return written
    run = _Run(run_dir, options)
    for name, (kind, changes) in todo.items():
        path = out_dir / name
        run.options = dataclasses.replace(options, **changes)
        try:
            written[name] = FIGURES[kind](run, path)
            log.info("%s: wrote %s", run_dir, path)
        except UserError as err:
            log.info("%s: skipped %s (%s)", run_dir, name, err)
    run.options = options
    return written
