"""Data read from the user's files: benchmark directories, arrays, tables and image folders.

Every reader turns a missing, truncated or malformed file into a UserError naming the file;
no reader unpickles (``np.load(..., allow_pickle=False)``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from vaelab.data import Splits, source, split_arrays
from vaelab.data.idx import OFFICIAL_MD5, read_idx
from vaelab.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _existing_dir(arg: str) -> Path:
    path = Path(arg).expanduser()
    if not path.exists():
        raise UserError(f"{path}: directory not found")
    if not path.is_dir():
        raise UserError(f"{path}: not a directory")
    return path


def _existing_file(arg: str) -> Path:
    path = Path(arg).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    return path


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, read eagerly so corruption surfaces here, never pickled."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise UserError(f"{path}: corrupt or truncated .npz file ({err})") from None


def _as_images(x: np.ndarray, where: Path) -> np.ndarray:
    """(N, 784) -> (N, 1, 28, 28); (N, H, W) -> (N, 1, H, W); other ranks stay as they are."""
    if x.ndim == 2 and x.shape[1] == 784:
        return x.reshape(-1, 1, 28, 28)
    if x.ndim == 3:
        return x[:, None]
    if x.ndim in (2, 4):
        return x
    raise UserError(f"{where}: expected an array of shape (N, D), (N, H, W) or (N, C, H, W), got {x.shape}")


def _numeric(x: np.ndarray, where: Path) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise UserError(f"{where}: array of dtype {x.dtype} is not numeric")
    return x.astype(np.float32)


@source("binarized-mnist", needs_arg=True)
def binarized_mnist(arg: str) -> Splits:
    """Statically binarized MNIST (Larochelle & Murray 2011): 50k/10k/10k rows of 784 bits.

    Reads `train.npz`, `valid.npz`, `test.npz` (array `x`) and `test_labels.npz` (array `y`),
    or Larochelle's original `binarized_mnist_{train,valid,test}.amat` text files.
    """
    root = _existing_dir(arg)
    parts, labels = {}, None
    for split in ("train", "valid", "test"):
        npz, amat = root / f"{split}.npz", root / f"binarized_mnist_{split}.amat"
        if npz.is_file():
            arrays = load_npz(npz)
            if "x" not in arrays:
                raise UserError(f"{npz}: no array named 'x' (found {', '.join(arrays) or 'none'})")
            x = arrays["x"]
        elif amat.is_file():
            x = _read_amat(amat)
        else:
            raise UserError(f"{root}: neither {npz.name} nor {amat.name} found")
        where = npz if npz.is_file() else amat
        if x.ndim != 2 or x.shape[1] != 784:
            raise UserError(f"{where}: expected shape (N, 784), got {x.shape}")
        if not np.isin(x, (0, 1)).all():
            raise UserError(f"{where}: values are not all 0 or 1, so this is not binarized MNIST")
        parts[split] = torch.as_tensor(x.astype(np.float32).reshape(-1, 1, 28, 28))
    if (root / "test_labels.npz").is_file():
        y = load_npz(root / "test_labels.npz").get("y")
        if y is None or y.shape != (len(parts["test"]),):
            raise UserError(f"{root / 'test_labels.npz'}: expected array 'y' with one label per test row")
        labels = torch.as_tensor(y.astype(np.int64))
    return Splits("binarized-mnist", parts["train"], parts["valid"], parts["test"], test_labels=labels)


def _read_amat(path: Path) -> np.ndarray:
    try:
        x = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except ValueError as err:
        raise UserError(f"{path}: not a whitespace-separated table of numbers ({err})") from None
    return x


def _idx_source(kind: str, arg: str) -> Splits:
    """Official MNIST-style IDX files: train (60k) split into 50k train + the last 10k as valid."""
    root = _existing_dir(arg)
    arrays = {}
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        gz, raw = root / f"{stem}.gz", root / stem
        if gz.is_file():
            arrays[stem] = read_idx(gz, OFFICIAL_MD5[kind][gz.name])
        elif raw.is_file():
            arrays[stem] = read_idx(raw)  # official checksums are of the .gz files; shape is checked
        else:
            raise UserError(f"{root}: {kind} needs {stem}.gz (or {stem}); not found")
    images, labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    test_images, test_labels = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    if images.ndim != 3 or len(images) != len(labels) or len(test_images) != len(test_labels):
        raise UserError(f"{root}: image and label files disagree in count")
    n_valid = min(10_000, len(images) // 6)

    def scaled(a):
        return torch.as_tensor(a.astype(np.float32)[:, None] / 255.0)

    def ints(a):
        return torch.as_tensor(a.astype(np.int64))

    return Splits(
        kind,
        scaled(images[:-n_valid]),
        scaled(images[-n_valid:]),
        scaled(test_images),
        ints(labels[:-n_valid]),
        ints(labels[-n_valid:]),
        ints(test_labels),
    )


@source("mnist", needs_arg=True)
def mnist(arg: str) -> Splits:
    """Official MNIST IDX files (gzipped files checked against the official MD5)."""
    return _idx_source("mnist", arg)


@source("fashion-mnist", needs_arg=True)
def fashion_mnist(arg: str) -> Splits:
    """Fashion-MNIST IDX files (gzipped files checked against the official MD5)."""
    return _idx_source("fashion-mnist", arg)


@source("npz", needs_arg=True)
def npz(arg: str) -> Splits:
    """An .npz with arrays `train`, `valid`, `test` (labels optional as `train_labels` ...),
    or one array `x` (labels optional as `y`) split 80/10/10."""
    path = _existing_file(arg)
    arrays = load_npz(path)
    if {"train", "valid", "test"} <= arrays.keys():
        xs = {
            s: torch.as_tensor(_as_images(_numeric(arrays[s], path), path))
            for s in ("train", "valid", "test")
        }
        ys = {
            s: torch.as_tensor(arrays[f"{s}_labels"].astype(np.int64)) if f"{s}_labels" in arrays else None
            for s in ("train", "valid", "test")
        }
        shapes = {tuple(x.shape[1:]) for x in xs.values()}
        if len(shapes) != 1:
            raise UserError(f"{path}: train, valid and test have different example shapes {sorted(shapes)}")
        return Splits(path.name, xs["train"], xs["valid"], xs["test"], ys["train"], ys["valid"], ys["test"])
    key = "x" if "x" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
    if key is None:
        raise UserError(
            f"{path}: expected arrays train/valid/test or x (found {', '.join(arrays) or 'none'})"
        )
    y = arrays.get("y")
    return _split_checked(path, _as_images(_numeric(arrays[key], path), path), y)


@source("npy", needs_arg=True)
def npy(arg: str) -> Splits:
    """One .npy array of examples, split 80/10/10."""
    path = _existing_file(arg)
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{path}: corrupt or truncated .npy file ({err})") from None
    return _split_checked(path, _as_images(_numeric(x, path), path), None)


@source("csv", needs_arg=True)
def csv(arg: str) -> Splits:
    """Tabular rows of numbers (comma-separated, an optional header line), split 80/10/10."""
    path = _existing_file(arg)
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if lines and not _is_numeric_row(lines[0]):
        lines = lines[1:]  # header
    rows = []
    for number, line in enumerate(lines, start=1):
        cells = line.split(",")
        try:
            rows.append([float(c) for c in cells])
        except ValueError:
            raise UserError(f"{path}: data row {number} has a non-numeric cell: {line[:60]!r}") from None
        if len(rows[-1]) != len(rows[0]):
            raise UserError(
                f"{path}: data row {number} has {len(rows[-1])} columns, the first has {len(rows[0])}"
            )
    if not rows:
        raise UserError(f"{path}: no data rows")
    return _split_checked(path, np.asarray(rows, dtype=np.float32), None)


def _is_numeric_row(line: str) -> bool:
    try:
        [float(c) for c in line.split(",")]
    except ValueError:
        return False
    return True


@source("folder", needs_arg=True)
def folder(arg: str) -> Splits:
    """Images under a directory (grey levels via Pillow, all the same size), split 80/10/10;
    images in sub-folders are labelled by the sub-folder's name."""
    from PIL import Image, UnidentifiedImageError

    root = _existing_dir(arg)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise UserError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images, labels = [], []
    for p in paths:
        try:
            with Image.open(p) as image:
                images.append(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
        except (UnidentifiedImageError, OSError) as err:
            raise UserError(f"{p}: cannot read image ({err})") from None
        if images[-1].shape != images[0].shape:
            raise UserError(f"{p}: size {images[-1].shape} differs from {paths[0]}'s {images[0].shape}")
        labels.append(p.parent.relative_to(root).as_posix())
    y = np.asarray(labels) if len(set(labels)) > 1 else None
    return _split_checked(root, np.stack(images)[:, None], y)


def _split_checked(where: Path, x: np.ndarray, y) -> Splits:
    if len(x) == 0:
        raise UserError(f"{where}: the data set is empty")
    if y is not None and len(y) != len(x):
        raise UserError(f"{where}: {len(y)} labels for {len(x)} examples")
    return split_arrays(where.name, x, None if y is None else np.asarray(y))
