"""Figures: image grids of decoder means, prior samples and reconstructions.

Each figure function is split in two: one that computes the array behind the picture (tested
for content: shapes, ranges, coordinates) and one that draws it with matplotlib's Agg backend
and writes the PNG atomically.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from vaelab.distributions import draw  # noqa: E402
from vaelab.errors import UserError  # noqa: E402
from vaelab.runs import atomic_write  # noqa: E402


def tile(images: Tensor | np.ndarray, ncols: int | None = None, pad: int = 2, pad_value: float = 0.0) -> np.ndarray:
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


def plot_prior_samples(model, path: str | Path, n: int = 64, *, mode: str = "mean", seed: int = 0) -> Path:
    x = prior_samples(model, n, mode=mode, seed=seed)
    what = "decoder mean E[x|z]" if mode == "mean" else "a draw x ~ p(x|z)"
    return show_grid(tile(as_images(x, model.x_shape)), f"{n} samples: z ~ N(0, I), shown as {what}", path)


def plot_reconstructions(model, x: Tensor, path: str | Path) -> Path:
    """Originals (odd rows) above their reconstructions (even rows), 8 per row."""
    x_mean = reconstructions(model, x)
    images = as_images(x, model.x_shape)
    recon = as_images(x_mean, model.x_shape)
    ncols = min(8, len(images))
    rows = []
    for start in range(0, len(images), ncols):
        rows += [images[start : start + ncols], recon[start : start + ncols]]
    pairs = torch.cat([torch.cat([r, torch.zeros_like(r[:1]).expand(ncols - len(r), *r.shape[1:])]) for r in rows])
    title = "originals (rows 1, 3, ...) over reconstructions E[x | z = E_q[z|x]] (rows 2, 4, ...)"
    return show_grid(tile(pairs, ncols), title, path)
