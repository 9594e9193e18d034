"""MATLAB .mat files (levels 4 and 5), read with scipy.io.loadmat after their headers are checked.

A .mat file is a sequence of typed, sized matrices, not a pickle: reading one runs no code.
`scipy.io.whosmat` lists each variable's name, shape and class from the headers alone; the
variables a reader needs are checked there (present, of an expected class and rank, within
limits.max_array_elements and, unpacked, limits.max_decompressed_bytes) before `loadmat` reads
exactly those variables. MATLAB 7.3 files are HDF5 and refused with one line; every way a file can
be damaged is a UserError naming it.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaelab.data.checks import regular_file, warnings_as_errors
from vaelab.errors import UserError
from vaelab.limits import Limits, check_elements, limit_error

CLASS_BYTES = {
    "double": 8,
    "single": 4,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
    "logical": 1,
    "char": 4,  # scipy reads characters as 4-byte unicode
    "cell": 8,  # one reference per element; its contents are checked by the caller
}
NUMERIC = frozenset(CLASS_BYTES) - {"char", "cell"}
# What scipy raises on a damaged file (besides its MatReadError), by where it was parsing: ValueError
# (bad tags, sizes, classes), TypeError and KeyError (unknown type codes), struct.error and
# EOFError/OSError (short reads), zlib.error (a corrupt compressed variable), IndexError,
# OverflowError (absurd dimensions), UnicodeDecodeError (names), NotImplementedError (v7.3).
MAT_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    struct.error,
    EOFError,
    OSError,
    zlib.error,
    IndexError,
    OverflowError,
    UnicodeDecodeError,
    NotImplementedError,
    AttributeError,
    Warning,
)


@dataclass(frozen=True)
class Variable:
    """A variable a reader needs: the MATLAB classes it may have and its number of dimensions."""

    classes: frozenset[str]
    ndim: int


def read_mat(path: str | Path, wanted: dict[str, Variable], limits: Limits) -> dict[str, np.ndarray]:
    """The variables `wanted` of a .mat file, each checked from the headers before it is read."""
    from scipy.io import loadmat, whosmat
    from scipy.io.matlab import MatReadError

    errors = (*MAT_ERRORS, MatReadError)
    path = regular_file(path)
    try:
        with warnings_as_errors():
            listed = {name: (tuple(shape), cls) for name, shape, cls in whosmat(str(path))}
    except errors as err:
        raise _mat_error(path, err) from None
    total = 0
    for name, variable in wanted.items():
        if name not in listed:
            known = ", ".join(sorted(listed)[:10]) or "none"
            raise UserError(f"{path}: no variable {name!r} (found {known})")
        shape, cls = listed[name]
        if cls not in variable.classes:
            raise UserError(
                f"{path}: variable {name!r} is of class {cls}, "
                f"expected {' or '.join(sorted(variable.classes))}"
            )
        if len(shape) != variable.ndim:
            raise UserError(
                f"{path}: variable {name!r} has shape {shape}, expected {variable.ndim} dimensions"
            )
        elements = check_elements(f"{path}: variable {name!r}", shape, limits, declared_by="its header")
        total += elements * CLASS_BYTES[cls]
    if total > limits.max_decompressed_bytes:
        raise limit_error(
            str(path), f"declares {total:,} bytes of variables", "max_decompressed_bytes", limits
        )
    try:
        with warnings_as_errors():
            arrays = loadmat(str(path), variable_names=list(wanted), mat_dtype=False, chars_as_strings=True)
    except errors as err:
        raise _mat_error(path, err) from None
    out = {}
    for name in wanted:
        value = arrays.get(name)
        shape = listed[name][0]
        if not isinstance(value, np.ndarray) or (value.shape != shape and math.prod(shape) != 0):
            got = getattr(value, "shape", type(value).__name__)
            raise UserError(f"{path}: variable {name!r} reads as {got}, its header says {shape}")
        out[name] = value
    return out


def _mat_error(path: Path, err: BaseException) -> UserError:
    if isinstance(err, NotImplementedError):
        return UserError(f"{path}: a MATLAB 7.3 (HDF5) file; save it as a version 5 .mat file (-v7)")
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserError(f"{path}: not a readable .mat file ({text[:160]})")
