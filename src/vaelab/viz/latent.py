"""The latent space as arrays: scatter of posterior means, decoded grid, interpolations, traversals.

Each function returns a typed result (tensors, numpy arrays and the figure's title as text) and
imports no plotting library; `vaelab.viz.draw` draws them. Latent coordinates are in units of the
prior's standard deviation (p(z) = N(0, I)); latent dimensions are named z1, z2, ... (1-based,
`vaelab.diagnostics.latent_name`) in every title and label.

A model conditional on a label (q(z|x, y), p(x|z, y)) goes through `vaelab.viz.conditional`:
codes are E_q[z|x, y] at each image's own label (`encode`), decodes are under the label the
caller names (`decoder`), and every title says which.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vaelab.devices import model_device
from vaelab.diagnostics import LatentStatistics, latent_name, latent_statistics
from vaelab.errors import UserError
from vaelab.models import given_labels
from vaelab.viz.conditional import decoder, encode, is_conditional, label_text
from vaelab.viz.images import ImageRows, as_images, image_rows, tile

LATENT_UNIT = "prior s.d. units"

# ------------------------------------------------------------------------------ latent scatter

# matplotlib's qualitative maps tab10 and tab20 (Vega's category10/20), as RGB in [0, 1]
TAB10 = ("1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf")
TAB20 = (
    "1f77b4", "aec7e8", "ff7f0e", "ffbb78", "2ca02c", "98df8a", "d62728", "ff9896", "9467bd", "c5b0d5",
    "8c564b", "c49c94", "e377c2", "f7b6d2", "7f7f7f", "c7c7c7", "bcbd22", "dbdb8d", "17becf", "9edae5",
)  # fmt: skip


def _rgba(hex_colors: tuple[str, ...]) -> np.ndarray:
    rgb = np.array([[int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)] for h in hex_colors])
    return np.column_stack([rgb, np.ones(len(rgb))])


def class_palette(num_classes: int) -> np.ndarray:
    """(K, 4) RGBA colours, distinct: tab10 (K <= 10), tab20 (K <= 20), evenly spaced hues beyond."""
    if num_classes <= 10:
        return _rgba(TAB10[:num_classes])
    if num_classes <= 20:
        return _rgba(TAB20[:num_classes])
    hues = np.linspace(0.0, 1.0, num_classes, endpoint=False)
    return np.array([(*colorsys.hsv_to_rgb(h, 0.8, 0.85), 1.0) for h in hues])


SINGLE_COLOR = np.array([0.12, 0.47, 0.71, 1.0])  # tab10 blue, for unlabeled data


@dataclass(frozen=True)
class LatentScatter:
    """The points of a latent scatter plot and the colour of each.

    points: (N, 2) posterior means E_q[z|x] (Z = 2), their first two principal components (Z > 2,
    `projection` "pca"), or (z1, label) for Z = 1. labels: (N,) int or None; colors: (N, 4) RGBA,
    one colour per class (`class_colors[k]` for class `classes[k]`), a single colour without labels.
    class_names: what the legend calls `classes[k]`: the data's class name (a folder's sub-folder,
    an npz's string label) where it has names (`named`), else the code itself.
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
    title: str
    class_names: tuple[str, ...] = ()
    named: bool = False


def _mean_axis(d: int, given: str = "x") -> str:
    return f"{latent_name(d)} = E_q[{latent_name(d)}|{given}] ({LATENT_UNIT})"


def class_name(code: int, label_names: Sequence[str] | None) -> str:
    """The name of class `code`: label_names[code] where the data name their classes, else the code."""
    if label_names is not None and 0 <= code < len(label_names):
        return label_names[code]
    return str(code)


def latent_scatter(
    model,
    x: Tensor,
    labels: Tensor | np.ndarray | None = None,
    *,
    split: str = "test",
    label_names: Sequence[str] | None = None,
) -> LatentScatter:
    """Posterior means of x: (N, *x_shape), projected to 2-D by PCA when Z > 2, coloured by label;
    label_names[c] names class code c in the legend (None: the codes). A conditional model's
    means are E_q[z | x, y] at each row's own label y = labels (`encode`): the label is then carried
    by y, not z, so classes that mix in this picture are what such a model is for."""
    from sklearn.decomposition import PCA

    y = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if y is not None and len(y) != len(x):
        raise UserError(f"latent scatter: {len(x)} examples but {len(y)} labels")
    conditional = is_conditional(model)
    given = "x, y" if conditional else "x"
    codes_y = None if y is None else torch.as_tensor(y)
    z = encode(model, x, codes_y).double().numpy()  # (N, Z)
    n, latent_dim = z.shape
    ratio = None
    if latent_dim == 2:
        points, projection = z, "none"
        axis = (_mean_axis(0, given), _mean_axis(1, given))
    elif latent_dim == 1:
        second = y.astype(float) if y is not None else np.zeros(n)
        points, projection = np.stack([z[:, 0], second], 1), "1-d"
        axis = (_mean_axis(0, given), "label" if y is not None else "(Z = 1: no second axis)")
    else:
        pca = PCA(n_components=2, random_state=0).fit(z)
        points, projection = pca.transform(z), "pca"
        ratio = (float(pca.explained_variance_ratio_[0]), float(pca.explained_variance_ratio_[1]))
        pc_1, pc_2 = (
            f"PC {i + 1} of the {latent_dim}-D posterior means ({100 * r:.0f}% of their variance)"
            for i, r in enumerate(ratio)
        )
        axis = (pc_1, pc_2)
    if y is None:
        classes: tuple[int, ...] = ()
        class_colors = SINGLE_COLOR[None]
        colors = np.repeat(SINGLE_COLOR[None], n, 0)
    else:
        classes = tuple(int(c) for c in np.unique(y))
        class_colors = class_palette(len(classes))
        colors = class_colors[np.searchsorted(classes, y)]
    named = label_names is not None
    if projection == "1-d" and y is not None and named:
        axis = (axis[0], "class")
    what = (
        "posterior means E_q[z|x]"
        if not conditional
        else "posterior means E_q[z|x, y], each at its own label y"
    )
    what += ", PCA to 2-D" if projection == "pca" else ""
    colour = f"coloured by {'class' if named else 'label'}" if classes else "(no labels)"
    title = f"{split}-set {what}, {colour}, N = {n}"
    if conditional:
        title += "\n(the decoder is told y, so z need not separate the classes)"
    names = tuple(class_name(c, label_names) for c in classes)
    return LatentScatter(
        points, y, colors, classes, class_colors, axis, projection, ratio, latent_dim, title, names, named
    )


# ---------------------------------------------------------------------------------- latent grid


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


def grid_box(n: int, z_range: tuple[float, float, float, float] | None) -> tuple[float, float, float, float]:
    """The latent rectangle (z1min, z1max, z2min, z2max) an n x n grid covers: the quantile grid's
    extreme points (z_range None), or z_range itself."""
    if z_range is not None:
        z1min, z1max, z2min, z2max = z_range
        return z1min, z1max, z2min, z2max
    _, z = quantile_coordinates(n)
    return float(z[0]), float(z[-1]), float(z[0]), float(z[-1])


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
    title: str


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
    label: int | None = None,
) -> LatentGrid:
    """Decode an n x n grid of latent points (Kingma & Welling 2014, Figure 4).

    z_range None: both axes at the Gaussian quantiles of `quantile_coordinates(n)`; else
    (z1min, z1max, z2min, z2max) with n evenly spaced values per axis, ends included. dims: the
    0-based indices of the two latent dims varied; for Z > 2 the others are held at `base` (Z,),
    zeros by default (the prior mean). label: the class a conditional model decodes every point
    under, E[x | z, y = label] (Kingma et al. 2014, Figure 1a: one class's styles); None for a model
    without labels.
    """
    latent_dim = model.latent_dim
    if latent_dim < 2:
        raise UserError("a latent grid needs a latent size of at least 2; draw traversals for Z = 1")
    d1, d2 = dims
    if d1 == d2 or not (0 <= d1 < latent_dim and 0 <= d2 < latent_dim):
        raise UserError(
            f"dims {latent_name(d1)},{latent_name(d2)}: need two different latent dims of "
            f"{latent_name(0)}..{latent_name(latent_dim - 1)}"
        )
    if z_range is None:
        probabilities, z1_values = quantile_coordinates(n)
        z2_values, spacing = z1_values.copy(), "quantile"
    else:
        z1min, z1max, z2min, z2max = z_range
        if not (z1min < z1max and z2min < z2max):
            raise UserError(
                f"z_range {z1min},{z1max},{z2min},{z2max}: each minimum must be below its maximum"
            )
        if n < 2:
            raise UserError(f"a latent grid needs n >= 2 points per axis, got {n}")
        probabilities, spacing = None, "range"
        z1_values, z2_values = np.linspace(z1min, z1max, n), np.linspace(z2min, z2max, n)
    base = torch.zeros(latent_dim) if base is None else base.detach().float().reshape(latent_dim)
    z = base.repeat(n, n, 1)  # (n, n, Z)
    z[:, :, d1] = torch.as_tensor(z1_values, dtype=torch.float32)[None, :]
    z[:, :, d2] = torch.as_tensor(z2_values[::-1].copy(), dtype=torch.float32)[:, None]  # top row: largest z2
    x_mean = (
        decoder(model, label).likelihood(z.reshape(n * n, latent_dim).to(model_device(model))).mean.cpu()
    )  # (n*n, *x_shape)
    images = as_images(x_mean, model.x_shape)
    height, width = images.shape[-2:]
    if probabilities is not None:  # the quantile grid
        where = (
            f"at Gaussian quantiles $\\Phi^{{-1}}(p)$, p = {probabilities[0]:.3f} ... {probabilities[-1]:.3f}"
        )
    else:
        where = (
            f"{latent_name(d1)} in [{z1_values[0]:g}, {z1_values[-1]:g}], "
            f"{latent_name(d2)} in [{z2_values[0]:g}, {z2_values[-1]:g}]"
        )
    given = label_text(model, label)
    means = f"E[x|z, {given}]" if given else "E[x|z]"
    title = f"decoder means {means} on a {n}x{n} latent grid {where}"
    if latent_dim > 2:
        title += f"\nother {latent_dim - 2} latent dims held at {base_description}"
    return LatentGrid(
        z,
        z1_values,
        z2_values,
        x_mean,
        tile(images, n, pad=pad),
        (d1, d2),
        spacing,
        probabilities,
        base_description,
        (height, width),
        pad,
        title,
    )


def dim_scores(stats: LatentStatistics) -> tuple[np.ndarray, str]:
    """How much each latent dim is used, to rank them: (Z,) mean KL per dim in nats ("KL") where
    there is one, else A_u = Cov_x(E_q[z_u]) ("Var_x(z)"; an AE, a mixture prior)."""
    if stats.kl_per_dim is not None:
        return stats.kl_per_dim, "KL"
    return stats.posterior_mean_variance, "Var_x(z)"


def top_dims(stats: LatentStatistics, k: int) -> tuple[int, ...]:
    """The k most used latent dims (0-based), most used first, by `dim_scores`."""
    score, _ = dim_scores(stats)
    return tuple(int(d) for d in np.argsort(-score, kind="stable")[:k])


# -------------------------------------------------------------------------------- interpolation


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
        raise UserError(f"method {method!r} is not one of linear, spherical")
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
    images; x_mean: (P, T, *x_shape) decoder means along each path; indices: (P, 2) rows of the split;
    rows: the picture, one row per pair: image A | decoder means along the path | image B.
    """

    t: np.ndarray
    z: Tensor
    x_a: Tensor
    x_b: Tensor
    x_mean: Tensor
    method: str
    indices: tuple[tuple[int, int], ...]
    rows: ImageRows


@torch.no_grad()
def interpolations(
    model,
    x_a: Tensor,
    x_b: Tensor,
    n: int = 10,
    *,
    method: str = "linear",
    indices: tuple[tuple[int, int], ...] = (),
    split: str = "test",
    classes: Sequence[tuple[str, str]] = (),
    labels: Tensor | None = None,
) -> Interpolations:
    """Decode the path between the posterior means of x_a[i] and x_b[i]: (P, *x_shape) each.
    classes: the class names of each pair's images, shown beside their row numbers (or ()).

    A conditional model takes labels: (P,), the one label both images of pair i have: both are
    encoded under it, z = E_q[z | x, y], and the whole path decoded under it, E[x | z(t), y], so the
    path moves through one class's styles (between classes, the decoder's label would have to jump
    somewhere along the path, and z does not hold the class to move it smoothly)."""
    if n < 2:
        raise UserError(f"an interpolation needs n >= 2 points, got {n}")
    conditional = is_conditional(model)
    t = torch.linspace(0.0, 1.0, n)
    z_a, z_b = encode(model, x_a, labels), encode(model, x_b, labels)  # (P, Z)
    z = torch.stack([interpolate(a, b, t, method) for a, b in zip(z_a, z_b, strict=True)])  # (P, T, Z)
    device = model_device(model)
    given = given_labels(model, None if labels is None else labels.to(device))
    # the protocol's sample dims lead: (T, P, Z), y (P,) broadcast over the T points of each path
    x_mean = (
        given.likelihood(z.transpose(0, 1).contiguous().to(device)).mean.transpose(0, 1).cpu()
    )  # (P, T, *x_shape)
    path = "the line z(t) = (1-t) z_A + t z_B" if method == "linear" else "the great-circle path (slerp)"
    means = "E[x|z(t), y] under the pair's own label y" if conditional else "E[x|z(t)]"
    rows = image_rows(
        [torch.cat([x_a[i : i + 1], x_mean[i], x_b[i : i + 1]]) for i in range(len(x_a))],
        model.x_shape,
        f"{method} interpolation between {split} images{' of one class' if conditional else ''}\n"
        f"decoder means {means} along {path}",
        row_labels=[
            f"#{a} ({classes[i][0]}) to #{b} ({classes[i][1]})" if classes else f"#{a} to #{b}"
            for i, (a, b) in enumerate(indices)
        ],
        column_labels=["image A"] + [f"{v:.2f}" for v in t.tolist()] + ["image B"],
        xlabel="path parameter t (z_A, z_B: posterior means of images A, B"
        + (", each given y)" if conditional else ")"),
        label_fontsize=7,
        max_width_inches=12.0,
    )
    return Interpolations(t.numpy(), z, x_a, x_b, x_mean, method, indices, rows)


def pick_pairs(
    labels: Tensor | None,
    num_examples: int,
    num_pairs: int,
    seed: int,
    *,
    same_label: bool = False,
    label: int | None = None,
) -> list[tuple[int, int]]:
    """`num_pairs` seeded random pairs of row indices: of different labels where labels exist, or
    with `same_label` of one label (a conditional model's paths), only of `label` where given."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(num_examples, generator=generator).tolist()
    if label is not None and labels is not None:
        order = [i for i in order if int(labels[i]) == label]
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    for i in order:
        if len(pairs) == num_pairs or i in used:
            continue
        for j in order:
            if j == i or j in used:
                continue
            if labels is None or (int(labels[i]) == int(labels[j])) == same_label:
                pairs.append((i, j))
                used |= {i, j}
                break
    return pairs


# ----------------------------------------------------------------------------------- traversals


@dataclass(frozen=True)
class Traversals:
    """Decoder means as one latent dim at a time sweeps `values`, the others held at `base`.

    dims: the latent dims shown (0-based), one per row, in decreasing order of `score` (mean KL
    per dim in nats where there is one; else A_u = Cov_x(E_q[z_u]), named by `score_name`);
    values: (S,) the values the dim takes (prior s.d. units); z: (R, S, Z); x_mean:
    (R, S, *x_shape); base: (Z,); rows: the picture, one row per dim.
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
    rows: ImageRows


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
    split: str = "test",
    label: int | None = None,
) -> Traversals:
    """Rows z_u in linspace(-span, span, steps) for the `max_rows` dims of largest mean KL over x;
    a conditional model decodes every point under `label`, E[x | z, y = label] (its `stats` are
    those of q(z|x, y), `vaelab.viz.run.Run.stats`)."""
    if steps < 1:
        raise UserError(f"n must be >= 1 traversal steps, got {steps}")
    stats = stats or latent_statistics(model, x)
    score_all, score_name = dim_scores(stats)
    if score_name == "KL":
        given = "x, y" if is_conditional(model) else "x"
        unit, sort = "nats", f"mean KL(q(z_u|{given}) || p(z_u)) over the {split} set"
    else:
        unit = LATENT_UNIT + "$^2$"
        why = "an AE has no KL" if getattr(model, "deterministic", False) else "no per-dim KL for this prior"
        sort = f"variance of the posterior mean over the {split} set ({why})"
    order = top_dims(stats, max_rows)
    values = torch.linspace(-span, span, steps)
    base = torch.zeros(model.latent_dim) if base is None else base.detach().float().reshape(-1)
    z = base.repeat(len(order), steps, 1)  # (R, S, Z)
    for row, d in enumerate(order):
        z[row, :, d] = values
    x_mean = decoder(model, label).likelihood(z.to(model_device(model))).mean.cpu()  # (R, S, *x_shape)
    given = label_text(model, label)
    means = f"E[x|z, {given}]" if given else "E[x|z]"
    rows = len(order)
    shown = f"top {rows} of {model.latent_dim} dims" if rows < model.latent_dim else f"all {rows} dims"
    picture = image_rows(
        list(x_mean),
        model.x_shape,
        f"latent traversals, decoder means {means}: one row per latent dim ({shown}),\nsorted by {sort};"
        f" other dims at {base_description}",
        row_labels=[f"{latent_name(d)}  {score_name} {score_all[d]:.2f} {unit}" for d in order],
        column_labels=[f"{v:g}" for v in values.tolist()],
        xlabel=f"value of the traversed latent dim ({LATENT_UNIT})",
        margin_inches=(2.6, 1.5),
    )
    return Traversals(
        order,
        score_all[list(order)],
        score_name,
        values.numpy(),
        z,
        x_mean,
        base,
        base_description,
        model.latent_dim,
        picture,
    )
