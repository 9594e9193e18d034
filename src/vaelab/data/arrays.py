"""NumPy .npy and .npz files, validated from their headers before anything is allocated.

An .npy header states the dtype and the shape; an .npz is a zip of .npy members whose directory
states each member's compression and unpacked size. Both are checked against `Limits` and
against what vaelab can use (real numbers or class names, never objects, which would need
pickle, nor complex numbers, whose imaginary part would be dropped) before the data are read,
and the data are read with `allow_pickle=False` always.
"""

from __future__ import annotations

import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from vaelab.data.checks import regular_file, warnings_as_errors
from vaelab.errors import UserError
from vaelab.limits import Limits, check_elements, limit_error

NPY_SUFFIX = ".npy"
REAL_KINDS = "biuf"  # bool, signed and unsigned integers, floats
NAME_KINDS = "US"  # str and bytes: class names, accepted as labels only
REFUSED_KINDS = {
    "c": "complex numbers (the imaginary part would be dropped; pass the real part or both as channels)",
    "O": "Python objects (reading them would need pickle, which vaelab never runs)",
    "V": "structured records",
    "M": "dates",
    "m": "time differences",
}
# What numpy's header parser raises on a damaged header: ValueError for most problems, and the
# errors of the Python tokenizer and parser it runs on the header's text (a null byte, an
# unclosed bracket, nesting too deep); a Warning is one we turned into an error.
HEADER_ERRORS = (ValueError, TypeError, SyntaxError, tokenize.TokenError, RecursionError, Warning)
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_LABEL = 2**53
"""Integral floats above this are no longer exact integers, so they are refused as labels."""
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}


def _header(f: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the .npy stream `f`, refused unless vaelab can hold such an array."""
    try:
        with warnings_as_errors():
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise UserError(f"{where}: .npy format version {version} is not supported (1.0 or 2.0)")
    except HEADER_ERRORS as err:
        raise UserError(f"{where}: not a valid .npy array ({_short(err)})") from None
    if dtype.kind in REFUSED_KINDS:
        raise UserError(f"{where}: dtype {dtype} holds {REFUSED_KINDS[dtype.kind]}")
    if any(n < 0 for n in shape):
        raise UserError(f"{where}: header declares a negative dimension in shape {shape}")
    return shape, dtype


def read_npy_stream(f: IO[bytes], where: str, size: int, limits: Limits) -> np.ndarray:
    """The array of the .npy stream `f` of `size` bytes, checked from its header first: element
    count within limits.max_array_elements, no empty dimension, and `size` exactly what the header
    declares (so a truncated file is refused before any allocation, and a zip member is read to
    its end, where its CRC is checked)."""
    shape, dtype = _header(f, where)
    elements = check_elements(where, shape, limits)
    if elements == 0:
        raise UserError(f"{where}: the array of shape {shape} is empty")
    needed, held = elements * dtype.itemsize, size - f.tell()
    if held != needed:
        problem = "truncated" if held < needed else "trailing bytes"
        raise UserError(
            f"{where}: {problem}: the header declares shape {shape} of {dtype} ({needed:,} bytes), "
            f"but {max(held, 0):,} bytes follow it"
        )
    f.seek(0)
    try:
        with warnings_as_errors():
            return np.lib.format.read_array(f, allow_pickle=False)
    except (*HEADER_ERRORS, OSError, EOFError, zlib.error, zipfile.BadZipFile) as err:
        raise UserError(f"{where}: corrupt or truncated array data ({_short(err)})") from None


def read_npy(path: str | Path, limits: Limits, ndims: tuple[int, ...] | None = None) -> np.ndarray:
    """One .npy file; `ndims` restricts the number of dimensions, checked from the header."""
    path = regular_file(path)
    try:
        with open(path, "rb") as f:
            if ndims is not None:
                shape, _ = _header(f, str(path))
                if len(shape) not in ndims:
                    raise UserError(f"{path}: expected an array of {_dims(ndims)}, got shape {shape}")
                f.seek(0)
            return read_npy_stream(f, str(path), path.stat().st_size, limits)
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err})") from None


def read_npz(path: str | Path, limits: Limits) -> dict[str, np.ndarray]:
    """Every array of an .npz, read eagerly (so damage surfaces here), each member checked first:
    a `.npy` name, stored or deflated, not encrypted, its unpacked size (all members together)
    within limits.max_decompressed_bytes, then its header as `read_npy_stream` checks it."""
    path = regular_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _checked_members(archive, path, limits)
            arrays = {}
            for info in members:
                key = info.filename[: -len(NPY_SUFFIX)]
                with archive.open(info) as f:
                    arrays[key] = read_npy_stream(f, f"{path}: array {key!r}", info.file_size, limits)
            return arrays
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as err:
        raise UserError(f"{path}: corrupt or truncated .npz file ({_short(err)})") from None


def _checked_members(archive: zipfile.ZipFile, path: Path, limits: Limits) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    if not members:
        raise UserError(f"{path}: the .npz archive holds no arrays")
    names = [info.filename for info in members]
    for info in members:
        name = info.filename
        if not name.endswith(NPY_SUFFIX):
            raise UserError(f"{path}: member {name!r} is not an .npy array")
        if names.count(name) > 1:
            raise UserError(f"{path}: member {name!r} appears more than once")
        if info.flag_bits & 0x1:
            raise UserError(f"{path}: member {name!r} is encrypted")
        if info.compress_type not in ZIP_METHODS:
            raise UserError(
                f"{path}: member {name!r} uses compression method {info.compress_type}; "
                f"only {' or '.join(ZIP_METHODS.values())} is supported"
            )
    unpacked = sum(info.file_size for info in members)
    if unpacked > limits.max_decompressed_bytes:
        raise limit_error(str(path), f"unpacks to {unpacked:,} bytes", "max_decompressed_bytes", limits)
    return members


def real_array(x: np.ndarray, where: str) -> np.ndarray:
    """`x` as float32 (uint8, 8-bit data, as it is), refused unless it holds real numbers (bools,
    integers or floats) that float32 can hold (a finite float64 beyond its range would silently
    become infinite)."""
    if x.dtype.kind not in REAL_KINDS:
        raise UserError(f"{where}: array of dtype {x.dtype} is not numeric")
    if x.dtype.kind == "f" and x.dtype.itemsize > 4:
        beyond = np.isfinite(x) & (np.abs(x) > FLOAT32_MAX)
        if beyond.any():
            value = x.flat[int(np.argmax(beyond))]
            raise UserError(f"{where}: value {value:g} is beyond the float32 range (±{FLOAT32_MAX:.4g})")
    return x if x.dtype == np.uint8 else x.astype(np.float32)


def checked_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """One label per example: a 1-D array of length n of integer codes (integral floats are taken
    as such) or class names (strings); int64 codes are returned as int64, names as they are."""
    if y.ndim != 1:
        raise UserError(f"{where}: labels must be one per example, a 1-D array; got shape {y.shape}")
    if len(y) != n:
        raise UserError(f"{where}: {len(y)} labels for {n} examples")
    if y.dtype.kind in NAME_KINDS:
        return y
    if y.dtype.kind not in REAL_KINDS:
        raise UserError(f"{where}: labels of dtype {y.dtype} are neither integers nor class names")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y)) | (np.abs(y) > MAX_LABEL)
        if bad.any():
            i = int(np.argmax(bad))
            raise UserError(f"{where}: label {i} is {y[i]}, not an integer class code")
    return y.astype(np.int64)


def _dims(ndims: tuple[int, ...]) -> str:
    """(2, 3, 4) -> '2, 3 or 4 dimensions'."""
    *rest, last = (str(n) for n in ndims)
    return (f"{', '.join(rest)} or {last}" if rest else last) + " dimensions"


def _short(err: BaseException) -> str:
    """The first line of an exception's message, cut to a readable length."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."
