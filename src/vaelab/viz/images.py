"""Pictures of examples as arrays: tiling, labelled rows of images, prior samples, reconstructions.

Everything here returns tensors or numpy arrays (no matplotlib): `vaelab.viz.draw` draws them.
Image values are the model's inputs, intensities in [0, 1] (8-bit levels scaled by 1/255), drawn
as they are: grey images (C = 1) on a grey map with 0 black and 1 white, colour images (C = 3)
as RGB. Padding between images and blank cells are white (`BACKGROUND`), the paper's colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vaelab.devices import model_device
from vaelab.errors import UserError
from vaelab.labels import label_code
from vaelab.models import given_labels
from vaelab.sampling import decode_prior_samples

BACKGROUND = 1.0
"""The value of padding and blank cells: white, for grey and colour images alike."""
DRAWN_CHANNELS = (1, 3)
"""Images vaelab draws: grey (C = 1) and RGB (C = 3)."""


def tile(
    images: Tensor | np.ndarray, ncols: int | None = None, pad: int = 2, pad_value: float = BACKGROUND
) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) images -> one (rows*(H+pad)-pad, cols*(W+pad)-pad[, 3]) array.

    Grey images (C = 1) give a 2-D array, RGB images (C = 3) an (H', W', 3) one. Padding is
    `pad_value` (white by default), so images stay apart whether their background is dark or light.
    """
    x = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in DRAWN_CHANNELS:
        raise UserError(
            f"cannot tile images of shape {x.shape}: expected (N, C, H, W) with C 1 (grey) or 3 (RGB)"
        )
    n, c, h, w = x.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    canvas = np.full((c, nrows * (h + pad) - pad, ncols * (w + pad) - pad), pad_value, dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        canvas[:, r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = x[i]
    return canvas[0] if c == 1 else canvas.transpose(1, 2, 0)


def as_images(x: Tensor, x_shape: tuple[int, ...]) -> Tensor:
    """Examples as (N, C, H, W) images; tabular data (N, D) are shown as a near-square strip."""
    if len(x_shape) == 3:
        return x.reshape(-1, *x_shape)
    d = math.prod(x_shape)
    side = math.ceil(math.sqrt(d))
    flat = torch.nn.functional.pad(x.reshape(-1, d), (0, side * side - d))
    return flat.reshape(-1, 1, side, side)


@dataclass(frozen=True)
class ImageGrid:
    """Images tiled into one near-square picture with a title. canvas: (H', W') or (H', W', 3)."""

    canvas: np.ndarray
    title: str


@dataclass(frozen=True)
class ImageRows:
    """Rows of equally sized images, tiled into one picture, with a label per row and per column.

    canvas: the tiled picture, rows of `num_columns` cells of `cell_size` (H, W) pixels, `pad`
    pixels apart. row_labels / column_labels: one string per row / column, or () for none.
    cell_inches, margin_inches (width, height), max_width_inches: the drawing's size on paper.
    """

    canvas: np.ndarray
    num_rows: int
    num_columns: int
    cell_size: tuple[int, int]
    pad: int
    row_labels: tuple[str, ...]
    column_labels: tuple[str, ...]
    title: str
    xlabel: str = ""
    label_fontsize: float = 8
    title_fontsize: float = 9
    cell_inches: float = 0.62
    margin_inches: tuple[float, float] = (1.0, 1.4)
    max_width_inches: float | None = None

    def row_centre(self, i: int) -> float:
        """Pixel coordinate (down the canvas) of the centre of row i."""
        h = self.cell_size[0]
        return i * (h + self.pad) + (h - 1) / 2

    def column_centre(self, j: int) -> float:
        """Pixel coordinate (across the canvas) of the centre of column j."""
        w = self.cell_size[1]
        return j * (w + self.pad) + (w - 1) / 2

    @property
    def inches(self) -> tuple[float, float]:
        width = self.cell_inches * self.num_columns + self.margin_inches[0]
        if self.max_width_inches is not None:
            width = min(self.max_width_inches, width)
        return width, self.cell_inches * self.num_rows + self.margin_inches[1]


def image_rows(
    rows: Sequence[Tensor],
    x_shape: tuple[int, ...],
    title: str,
    *,
    row_labels: Sequence[str] = (),
    column_labels: Sequence[str] = (),
    pad: int = 2,
    **layout,
) -> ImageRows:
    """Tile rows of examples, each (S, *x_shape) with the same S, into one labelled picture.

    Shorter rows are padded with blank (background) cells; `layout` sets ImageRows' text and size
    fields.
    """
    num_columns = max(len(r) for r in rows)
    cells = []
    for row in rows:
        images = as_images(row.reshape(-1, *x_shape), x_shape)
        blank = images.new_full((num_columns - len(images), *images.shape[1:]), BACKGROUND)
        cells.append(torch.cat([images, blank]))
    images = torch.cat(cells)  # (R * S, C, H, W)
    height, width = images.shape[-2:]
    return ImageRows(
        tile(images, num_columns, pad=pad),
        len(rows),
        num_columns,
        (height, width),
        pad,
        tuple(row_labels),
        tuple(column_labels),
        title,
        **layout,
    )


# ----------------------------------------------------------------------------- prior samples


PRIOR_NAMES = {"normal": "N(0, I)", "mog": "a learned Gaussian mixture", "vamp": "the VampPrior"}


@torch.no_grad()
def prior_samples(
    model, n: int, *, mode: str = "mean", seed: int = 0, label: str | int | None = None
) -> Tensor:
    """Decode z ~ p(z): the decoder mean E[x|z] (mode="mean") or a draw x ~ p(x|z) ("sample");
    a conditional model decodes p(x|z, y) given the class `label` (a name or code; `for_label`).

    For an AE, z ~ N(0, I) (it has no prior of its own; see `sample_title`). n: number of z.
    """
    return decode_prior_samples(model, n, mode=mode, seed=seed, label=label).cpu()


def sample_title(model, n: int, mode: str, label: str | int | None = None) -> str:
    """What a picture of `prior_samples(model, n, mode=mode)` shows.

    An AE has no prior: its pictures are codes z ~ N(0, I) decoded, which is not sampling the
    model, and the title says so.
    """
    family = "Bernoulli" if getattr(model.config, "likelihood", "") == "bernoulli" else "Gaussian"
    shown = "the decoder mean E[x|z]" if mode == "mean" else f"one {family} draw x ~ p(x|z)"
    if getattr(model, "deterministic", False):
        return f"{n} codes z ~ N(0, I) decoded (an AE has no prior to sample),\neach shown as {shown}"
    prior = PRIOR_NAMES.get(getattr(model.config, "prior", "normal"), "p(z)")
    if label is not None:
        classes = model.config.classes
        name = classes[label_code(classes, label)]
        shown = shown.replace("x ~ p(x|z)", "x ~ p(x|z, y)").replace("E[x|z]", "E[x|z, y]")
        return f"{n} prior samples z ~ {prior} decoded given the class y = {name},\neach shown as {shown}"
    layers = getattr(model.config, "layers", 1)
    if layers > 1:  # a ladder's p(z) is the top prior and the conditionals below it
        below = "then z_i ~ p(z_i | z_i+1) through every layer"
        return f"{n} prior samples z{layers} ~ {prior}, {below},\neach shown as {shown}"
    return f"{n} prior samples z ~ {prior}, each shown as {shown}"


def sample_grid(
    model, n: int, *, mode: str = "mean", seed: int = 0, label: str | int | None = None
) -> ImageGrid:
    """The picture of `n` prior samples (an AE: decoded N(0, I) codes; a conditional model: given
    the class `label`), with its title."""
    x = prior_samples(model, n, mode=mode, seed=seed, label=label)
    return ImageGrid(tile(as_images(x, model.x_shape)), sample_title(model, n, mode, label))


# ---------------------------------------------------------------------------- reconstructions


@torch.no_grad()
def reconstructions(model, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """Decoder mean at the posterior mean code: E[x | z = E_q[z|x]], shape of x, on x's device; a
    model that uses labels reconstructs given the rows' labels (N,): E[x | z = E_q[z|x, y], y]."""
    device = model_device(model)
    given = given_labels(model, None if labels is None else labels.to(device))
    return given.likelihood(given.posterior(x.to(device)).mean).mean.to(x.device)


RECONSTRUCTION = "E[x | z = E_q[z|x]]"


def reconstruction_rows(model, x: Tensor, ncols: int = 8, labels: Tensor | None = None) -> ImageRows:
    """Originals over their reconstructions, `ncols` per row: x (N, *x_shape) -> 2 * ceil(N / ncols) rows.

    Rows alternate: originals, then their decoder means E[x | z = E_q[z|x]] (not samples); a last,
    shorter pair of rows is padded with blank (background) cells. labels: (N,) the rows' labels,
    for a model that uses them (`reconstructions`).
    """
    recon = reconstructions(model, x, labels)
    rows, row_labels = [], []
    for start in range(0, len(x), ncols):
        rows += [x[start : start + ncols], recon[start : start + ncols]]
        row_labels += ["original", RECONSTRUCTION]
    return image_rows(
        rows,
        model.x_shape,
        f"{len(x)} images over their reconstructions (decoder mean at the posterior mean)",
        row_labels=row_labels,
        title_fontsize=10,
        cell_inches=0.75,
        margin_inches=(1.8, 0.8),
    )
