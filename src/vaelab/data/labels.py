"""Few labels: keep N train labels per class and mark the other train rows unlabelled (-1).

The semi-supervised benchmark's setting (Kingma et al. 2014 keep 10 labels per class of MNIST's
train split): a stratified choice of exactly N rows of each class, seeded so that a run and its
comparisons see the same labelled rows. Validation and test labels are left as they are (the
validation error is logged, never used for model selection; the test error is the result).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from vaelab.data.splits import Splits
from vaelab.errors import UserError

UNLABELLED = -1
"""The label of a row whose label is hidden (the trainer passes it to the objective as is)."""


def labelled_rows(labels: torch.Tensor, per_class: int, seed: int) -> np.ndarray:
    """The sorted train rows whose labels are kept: for each class c, `per_class` rows drawn
    without replacement from its rows by a NumPy generator seeded with `seed`, classes in order."""
    y = labels.numpy()
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == c), size=per_class, replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(chosen))


def keep_labels_per_class(splits: Splits, per_class: int | None, seed: int, where: str) -> Splits:
    """`splits` with only `per_class` train labels per class kept (`labelled_rows`), the others
    UNLABELLED; unchanged for None. Refused in one line when the train split has no labels or a
    class has fewer than `per_class` rows."""
    if per_class is None:
        return splits
    y = splits.train_labels
    if y is None:
        raise UserError(f"{where}: data.labels_per_class: the train split has no labels")
    counts = np.bincount(y.numpy())
    present = np.flatnonzero(counts)
    smallest = int(present[np.argmin(counts[present])])
    if counts[smallest] < per_class:
        raise UserError(
            f"{where}: data.labels_per_class {per_class}: class {smallest} has only "
            f"{counts[smallest]} labelled train rows"
        )
    kept = torch.full_like(y, UNLABELLED)
    rows = torch.as_tensor(labelled_rows(y, per_class, seed))
    kept[rows] = y[rows]
    return replace(splits, train_labels=kept)
