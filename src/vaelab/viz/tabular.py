"""Figures of tabular runs as arrays (no matplotlib): columns of data beside the model's.

A table's rows are not pictures, so a tabular run is shown column by column, in the user's units
(the data as given, and the model's output through the inverse of its input transform):

- `column_marginals`: each column's histogram, test data against rows sampled from the model;
- `column_pairs`: pairwise scatter of a few columns, data against samples;
- `column_reconstructions`: each column's value against its reconstruction E[x | z = E_q[z|x]].

The latent scatter of a tabular run is the usual one (`vaelab.viz.latent.latent_scatter`).
`vaelab.viz.draw_tabular` draws these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vaelab.data.transforms import Transform
from vaelab.tabular import reconstructed_rows, sampled_rows

MAX_MARGINALS = 16
"""Columns a marginals or reconstruction figure shows (the first ones): a 4 x 4 panel grid."""
MAX_PAIRS = 4
"""Columns of the pairwise scatter (the first ones): 6 pairs."""


@dataclass(frozen=True)
class ColumnMarginals:
    """data: (N, C) rows of the split; samples: (M, C) rows x ~ p(x|z), z ~ p(z); names: (C,);
    `columns` of `total` columns shown."""

    data: np.ndarray
    samples: np.ndarray
    names: tuple[str, ...]
    title: str
    total: int


@dataclass(frozen=True)
class ColumnPairs:
    """data: (N, C), samples: (M, C) for the C <= MAX_PAIRS columns `names`."""

    data: np.ndarray
    samples: np.ndarray
    names: tuple[str, ...]
    title: str


@dataclass(frozen=True)
class ColumnReconstructions:
    """data: (N, C) rows; reconstructions: (N, C) their E[x | z = E_q[z|x]]; names: (C,)."""

    data: np.ndarray
    reconstructions: np.ndarray
    names: tuple[str, ...]
    title: str
    total: int


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().double().cpu().numpy()


def column_marginals(
    model,
    transform: Transform,
    x: Tensor,
    names: tuple[str, ...],
    *,
    n: int = 2000,
    seed: int = 0,
    split: str,
) -> ColumnMarginals:
    """Histograms of each column: x (N, D) as stored against n draws x ~ p(x|z) of the model."""
    samples = sampled_rows(model, transform, n, mode="sample", seed=seed)
    shown = min(MAX_MARGINALS, len(names))
    title = (
        f"each column: {split} data ({len(x)} rows) against {n} rows sampled from the model "
        "(z ~ p(z), x ~ p(x|z)), in the data's units"
    )
    return ColumnMarginals(_numpy(x[:, :shown]), _numpy(samples[:, :shown]), names[:shown], title, len(names))


def column_pairs(
    model,
    transform: Transform,
    x: Tensor,
    names: tuple[str, ...],
    *,
    n: int = 2000,
    seed: int = 0,
    split: str,
) -> ColumnPairs:
    """Pairwise scatter of the first MAX_PAIRS columns: x (N, D) as stored and n model samples."""
    samples = sampled_rows(model, transform, n, mode="sample", seed=seed)
    shown = min(MAX_PAIRS, len(names))
    title = f"pairs of columns: {split} data against {n} rows sampled from the model, in the data's units"
    return ColumnPairs(_numpy(x[:, :shown]), _numpy(samples[:, :shown]), names[:shown], title)


def column_reconstructions(
    model, transform: Transform, x: Tensor, names: tuple[str, ...], *, split: str
) -> ColumnReconstructions:
    """Each column of x (N, D) as stored against its reconstruction, in the data's units."""
    recon = reconstructed_rows(model, transform, x)
    shown = min(MAX_MARGINALS, len(names))
    title = f"each column of {len(x)} {split} rows against its reconstruction E[x | z = E_q[z|x]]"
    return ColumnReconstructions(
        _numpy(x[:, :shown]), _numpy(recon[:, :shown]), names[:shown], title, len(names)
    )


def pick_rows(x: Tensor, n: int, seed: int) -> Tensor:
    """n seeded random rows of x, in their order in x: (min(n, N), D)."""
    generator = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=generator)[:n].sort().values]
