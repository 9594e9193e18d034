"""Data read from the user's files: benchmark directories, arrays, tables and image folders.

Every reader validates before it allocates (see `arrays`, `idx`, `tables`, `images`) and turns a
missing, truncated, malformed or oversized file into a UserError naming the file; no reader
unpickles. Every source takes the `Limits` it must respect.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaelab.data.arrays import checked_labels, read_npy, read_npz, real_array
from vaelab.data.checks import existing_dir, regular_file
from vaelab.data.idx import OFFICIAL_MD5, read_idx
from vaelab.data.images import IMAGE_SUFFIXES, image_paths, read_grey_images
from vaelab.data.splits import SPLITS, Splits, label_codes, split_arrays
from vaelab.data.tables import read_amat, read_csv
from vaelab.errors import UserError
from vaelab.limits import Limits

BINARIZED_MNIST_PIXELS = 784


def _as_images(x: np.ndarray, where: str) -> np.ndarray:
    """(N, 784) -> (N, 1, 28, 28); (N, H, W) -> (N, 1, H, W); other ranks stay as they are."""
    if x.ndim == 2 and x.shape[1] == 784:
        return x.reshape(-1, 1, 28, 28)
    if x.ndim == 3:
        return x[:, None]
    if x.ndim in (2, 4):
        return x
    raise UserError(f"{where}: expected an array of shape (N, D), (N, H, W) or (N, C, H, W), got {x.shape}")


def binarized_mnist(arg: str, limits: Limits) -> Splits:
    """Statically binarized MNIST (Larochelle & Murray 2011): 50k/10k/10k rows of 784 bits.

    Reads `train.npz`, `valid.npz`, `test.npz` (array `x`) and `test_labels.npz` (array `y`),
    or Larochelle's original `binarized_mnist_{train,valid,test}.amat` text files.
    """
    root = existing_dir(arg)
    parts = {}
    for split in SPLITS:
        npz, amat = root / f"{split}.npz", root / f"binarized_mnist_{split}.amat"
        if npz.exists():
            arrays = read_npz(npz, limits)
            if "x" not in arrays:
                raise UserError(f"{npz}: no array named 'x' (found {', '.join(arrays)})")
            x, where = arrays["x"], f"{npz}: array 'x'"
        elif amat.exists():
            x, where = read_amat(amat, limits), str(amat)
        else:
            raise UserError(f"{root}: neither {npz.name} nor {amat.name} found")
        if x.ndim != 2 or x.shape[1] != BINARIZED_MNIST_PIXELS:
            raise UserError(f"{where}: expected shape (N, {BINARIZED_MNIST_PIXELS}), got {x.shape}")
        if not np.isin(x, (0, 1)).all():
            raise UserError(f"{where}: values are not all 0 or 1, so this is not binarized MNIST")
        parts[split] = torch.as_tensor(x.astype(np.float32).reshape(-1, 1, 28, 28))
    labels = None
    if (root / "test_labels.npz").exists():
        path = root / "test_labels.npz"
        y = read_npz(path, limits).get("y")
        if y is None:
            raise UserError(f"{path}: no array named 'y' (one label per test row)")
        labels = torch.as_tensor(_codes_or_ints(checked_labels(y, len(parts["test"]), f"{path}: array 'y'")))
    return Splits("binarized-mnist", parts["train"], parts["valid"], parts["test"], test_labels=labels)


IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_source(kind: str, arg: str, limits: Limits) -> Splits:
    """Official MNIST-style IDX files: train (60k) split into 50k train + the last 10k as valid."""
    root = existing_dir(arg)
    arrays, paths = {}, {}
    for stem in IDX_STEMS:
        gz, raw = root / f"{stem}.gz", root / stem
        if gz.exists():
            paths[stem], arrays[stem] = gz, read_idx(gz, OFFICIAL_MD5[kind][gz.name], limits)
        elif raw.exists():  # official checksums are of the .gz files; shape is checked
            paths[stem], arrays[stem] = raw, read_idx(raw, limits=limits)
        else:
            raise UserError(f"{root}: {kind} needs {stem}.gz (or {stem}); not found")
    images, labels, test_images, test_labels = (arrays[stem] for stem in IDX_STEMS)
    image_path, label_path, test_image_path, test_label_path = (paths[stem] for stem in IDX_STEMS)
    for path, x in ((image_path, images), (test_image_path, test_images)):
        if x.ndim != 3:
            raise UserError(f"{path}: expected images of shape (N, H, W), got {x.shape}")
    for path, y in ((label_path, labels), (test_label_path, test_labels)):
        if y.ndim != 1:
            raise UserError(f"{path}: expected labels of shape (N,), got {y.shape}")
    for path, y, x, x_path in (
        (label_path, labels, images, image_path),
        (test_label_path, test_labels, test_images, test_image_path),
    ):
        if len(y) != len(x):
            raise UserError(f"{path}: {len(y)} labels for the {len(x)} images of {x_path.name}")
    if test_images.shape[1:] != images.shape[1:]:
        raise UserError(
            f"{test_image_path}: images of size {test_images.shape[1:]} differ from the training "
            f"images' {images.shape[1:]} ({image_path.name})"
        )
    n_valid = min(10_000, len(images) // 6)
    if n_valid < 1:
        raise UserError(
            f"{image_path}: {len(images)} training images, too few to hold out a validation split"
        )

    def levels(a):  # 8-bit grey levels as stored, (N, 1, H, W)
        return torch.as_tensor(a.astype(np.uint8)[:, None])

    def ints(a):
        return torch.as_tensor(a.astype(np.int64))

    return Splits(
        kind,
        levels(images[:-n_valid]),
        levels(images[-n_valid:]),
        levels(test_images),
        ints(labels[:-n_valid]),
        ints(labels[-n_valid:]),
        ints(test_labels),
    )


def mnist(arg: str, limits: Limits) -> Splits:
    """Official MNIST IDX files (gzipped files checked against the official MD5)."""
    return _idx_source("mnist", arg, limits)


def fashion_mnist(arg: str, limits: Limits) -> Splits:
    """Fashion-MNIST IDX files (gzipped files checked against the official MD5)."""
    return _idx_source("fashion-mnist", arg, limits)


def npz(arg: str, limits: Limits) -> Splits:
    """An .npz with arrays `train`, `valid`, `test` (labels optional as `train_labels` ...),
    or one array `x` (labels optional as `y`) split 80/10/10."""
    path = regular_file(arg)
    arrays = read_npz(path, limits)
    if set(SPLITS) <= arrays.keys():
        xs = {
            s: _as_images(real_array(arrays[s], f"{path}: array {s!r}"), f"{path}: array {s!r}")
            for s in SPLITS
        }
        shapes = {x.shape[1:] for x in xs.values()}
        if len(shapes) != 1:
            raise UserError(f"{path}: train, valid and test have different example shapes {sorted(shapes)}")
        dtypes = {str(x.dtype) for x in xs.values()}
        if len(dtypes) != 1:  # 8-bit levels beside real numbers: no one scaling fits both
            raise UserError(f"{path}: train, valid and test have different dtypes {sorted(dtypes)}")
        ys = _split_labels(arrays, {s: len(xs[s]) for s in SPLITS}, path)
        train, valid, test = (torch.as_tensor(xs[s]) for s in SPLITS)
        return Splits(path.name, train, valid, test, ys["train"], ys["valid"], ys["test"])
    key = "x" if "x" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
    if key is None:
        raise UserError(f"{path}: expected arrays train/valid/test or x (found {', '.join(arrays)})")
    x = _as_images(real_array(arrays[key], f"{path}: array {key!r}"), f"{path}: array {key!r}")
    y = arrays.get("y")
    if y is not None:
        y = checked_labels(y, len(x), f"{path}: array 'y'")
    return split_arrays(path.name, x, y)


def _split_labels(arrays: dict[str, np.ndarray], n: dict[str, int], path: Path) -> dict[str, Tensor | None]:
    """The optional `{split}_labels` arrays as int64 tensors: non-negative integer codes, or class
    names coded 0..K-1 in sorted order over all splits together (so a name has one code)."""
    ys = {
        s: checked_labels(arrays[f"{s}_labels"], n[s], f"{path}: array '{s}_labels'")
        for s in SPLITS
        if f"{s}_labels" in arrays
    }
    named = {s for s, y in ys.items() if y.dtype.kind in "US"}
    if named and named != ys.keys():
        raise UserError(f"{path}: labels of {', '.join(sorted(named))} are names, the others integers")
    if named:
        codes = np.split(
            label_codes(np.concatenate(list(ys.values()))), np.cumsum([len(y) for y in ys.values()])[:-1]
        )
        ys = dict(zip(ys, codes, strict=True))
    for s, y in ys.items():
        if (y < 0).any():
            raise UserError(f"{path}: array '{s}_labels' holds a negative label {int(y.min())}")
    return {s: torch.as_tensor(ys[s].astype(np.int64)) if s in ys else None for s in SPLITS}


def _codes_or_ints(y: np.ndarray) -> np.ndarray:
    """Integer labels as they are; class names as codes 0..K-1 in sorted order."""
    return label_codes(y) if y.dtype.kind in "US" else y.astype(np.int64)


def npy(arg: str, limits: Limits) -> Splits:
    """One .npy array of examples, split 80/10/10."""
    path = regular_file(arg)
    x = read_npy(path, limits, ndims=(2, 3, 4))
    return split_arrays(path.name, _as_images(real_array(x, str(path)), str(path)), None)


def csv(arg: str, limits: Limits) -> Splits:
    """Tabular rows of numbers (comma-separated, an optional header line), split 80/10/10."""
    path = regular_file(arg)
    return split_arrays(path.name, read_csv(path, limits), None)


def folder(arg: str, limits: Limits) -> Splits:
    """Images under a directory (grey levels via Pillow, all the same size), split 80/10/10;
    images in sub-folders are labelled by the sub-folder's name."""
    root = existing_dir(arg)
    paths = image_paths(root, limits)
    if not paths:
        raise UserError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    x = read_grey_images(paths, limits)
    labels = [p.parent.relative_to(root).as_posix() for p in paths]
    y = np.asarray(labels) if len(set(labels)) > 1 else None
    return split_arrays(root.name, x, y)
