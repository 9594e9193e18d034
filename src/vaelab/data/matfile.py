"""MATLAB .mat files (levels 4 and 5), read with scipy.io.loadmat after their headers are checked.

A .mat file is a sequence of typed, sized matrices, not a pickle: reading one runs no code. Every
element tag is first walked here (`_check_elements`: scipy trusts tags, and a damaged one can
crash the process or ask for gigabytes). `scipy.io.whosmat` then lists each variable's name, shape
and class from the headers alone; the variables a reader needs are checked there (present, of an
expected class and rank, within limits.max_array_elements and, unpacked,
limits.max_decompressed_bytes) before `loadmat` reads exactly those variables. MATLAB 7.3 files
are HDF5 and refused with one line; every way a file can be damaged is a UserError naming it.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable
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
    _check_elements(path, limits)  # before any scipy reader sees a tag
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


MI_MATRIX, MI_COMPRESSED = 14, 15
DATA_TYPES = frozenset({1, 2, 3, 4, 5, 6, 7, 9, 12, 13, MI_MATRIX, 16, 17, 18})
"""Level 5 data types (MATLAB's MAT-file format, Table 1-1) inside a variable: integers, floats,
a matrix, UTF-8/16/32 text; a variable itself is a matrix or a zlib-compressed matrix."""
HEADER_BYTES, TAG_BYTES = 128, 8
PREFIX_BYTES = 1 << 16
"""Bytes of each compressed element whose tags are walked: the dims, the name and the data tags of
a numeric matrix, and every string of a cell of names, lie well within it."""
CHUNK_BYTES = 1 << 20


def _check_elements(path: Path, limits: Limits) -> None:
    """Refuse a level 5 file whose element tags scipy would trust to its harm.

    scipy's readers take each tag at its word: a data type outside the format's table crashes the
    process (an unchecked table lookup, found by make fuzz), and an element of a compressed
    variable is allocated at the size its tag declares before it is inflated, so a damaged tag in
    a few bytes of zlib data asks for gigabytes. Here every variable's tags are walked first:
    each type must be one the format defines and each size must fit inside its container (the
    file, or what a compressed variable unpacks to: inflated in bounded chunks, refused past
    limits.max_decompressed_bytes, its first PREFIX_BYTES walked). Level 4 files have no tags."""
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(HEADER_BYTES)
        endian = {b"IM": "<", b"MI": ">"}.get(header[126:128])
        if len(header) < HEADER_BYTES or endian is None:
            return  # not a level 5 file: scipy decides

        def read_file(at: int) -> bytes:
            f.seek(at)
            return f.read(TAG_BYTES)

        at = HEADER_BYTES
        while at + TAG_BYTES <= file_size:
            kind, size = struct.unpack(endian + "II", read_file(at))
            end = at + TAG_BYTES + size
            if kind not in (MI_MATRIX, MI_COMPRESSED):
                raise UserError(f"{path}: not a readable .mat file (a variable of data type {kind})")
            if end > file_size:
                raise UserError(
                    f"{path}: not a readable .mat file (a variable declares {size:,} bytes, "
                    f"the file holds {file_size - at - TAG_BYTES:,} after it)"
                )
            if kind == MI_MATRIX:
                _check_tags(read_file, at + TAG_BYTES, end, endian, path)
            else:
                f.seek(at + TAG_BYTES)
                prefix, unpacked = _inflate(f, size, str(path), limits)
                _check_tags(_reader(prefix), 0, unpacked, endian, path)
            at = end


def _inflate(f, size: int, where: str, limits: Limits) -> tuple[bytes, int]:
    """(the first PREFIX_BYTES, the total) of `size` bytes of zlib data from f, inflated in
    chunks of at most CHUNK_BYTES and refused past limits.max_decompressed_bytes."""
    inflate = zlib.decompressobj()
    prefix, unpacked, left = bytearray(), 0, size
    try:
        while left > 0 and not inflate.eof:
            data = f.read(min(CHUNK_BYTES, left))
            if not data:
                break
            left -= len(data)
            while data and not inflate.eof:
                out = inflate.decompress(data, CHUNK_BYTES)
                data = inflate.unconsumed_tail
                unpacked += len(out)
                if unpacked > limits.max_decompressed_bytes:
                    what = f"a compressed variable unpacks to more than {unpacked:,} bytes"
                    raise limit_error(where, what, "max_decompressed_bytes", limits)
                prefix += out[: PREFIX_BYTES - len(prefix)]
    except zlib.error as err:
        raise UserError(f"{where}: not a readable .mat file (a compressed variable: {err})") from None
    return bytes(prefix), unpacked


def _reader(buffer: bytes) -> Callable[[int], bytes]:
    """read(at): the tag at `at` of an inflated prefix (fewer bytes past its end)."""
    return lambda at: buffer[at : at + TAG_BYTES]


def _check_tags(read: Callable[[int], bytes], start: int, end: int, endian: str, path: Path) -> None:
    """Every element tag in [start, end) (recursing into matrices) has a defined data type and
    declares bytes that fit before `end`; read(at) returns the 8 bytes at `at`, fewer past what
    can be seen (a compressed variable's prefix), where the walk stops."""
    at = start
    while at + TAG_BYTES <= end:
        tag = read(at)
        if len(tag) < TAG_BYTES:
            return
        kind, size = struct.unpack(endian + "II", tag)
        if kind >> 16:  # the small element format: size (<= 4) and type in one word, data in the next
            kind, size = kind & 0xFFFF, kind >> 16
            if kind not in DATA_TYPES or size > 4:
                raise UserError(
                    f"{path}: not a readable .mat file (a small element of type {kind}, {size} bytes)"
                )
            at += TAG_BYTES
            continue
        if kind not in DATA_TYPES:
            raise UserError(f"{path}: not a readable .mat file (an element of data type {kind})")
        if at + TAG_BYTES + size > end:
            raise UserError(
                f"{path}: not a readable .mat file (an element declares {size:,} bytes, "
                f"its variable holds {end - at - TAG_BYTES:,} after it)"
            )
        if kind == MI_MATRIX:
            _check_tags(read, at + TAG_BYTES, at + TAG_BYTES + size, endian, path)
        at += TAG_BYTES + size + (-size % 8)


def _mat_error(path: Path, err: BaseException) -> UserError:
    if isinstance(err, NotImplementedError):
        return UserError(f"{path}: a MATLAB 7.3 (HDF5) file; save it as a version 5 .mat file (-v7)")
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserError(f"{path}: not a readable .mat file ({text[:160]})")
