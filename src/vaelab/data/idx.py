"""Reader for the IDX format of the MNIST distributions (LeCun et al.), gzipped or not.

Layout: two zero bytes, a type byte (0x08 = unsigned byte), a byte with the number of
dimensions n, then n big-endian uint32 sizes, then the data in row-major order. Every way a
file can be wrong (missing, not a regular file, truncated gzip, bad magic, no dimensions, a size
above the limits or one that disagrees with its header, wrong checksum) becomes a UserError
naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from pathlib import Path

import numpy as np

from vaelab.data.checks import regular_file
from vaelab.errors import UserError
from vaelab.limits import DEFAULT_LIMITS, Limits, check_elements, limit_error

# MD5 of the official gzipped files, as published with each data set.
OFFICIAL_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "kmnist": {  # as torchvision's datasets.KMNIST.resources pins them
        "train-images-idx3-ubyte.gz": "bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "7320c461ea6c1c855c0b718fb2a4b134",
    },
}


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_idx(
    path: str | Path, expected_md5: str | None = None, limits: Limits = DEFAULT_LIMITS
) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a uint8 array of the shape its header gives.

    The header is read first and checked (at least one dimension, element count within
    limits.max_array_elements, for a .gz the unpacked size within limits.max_decompressed_bytes);
    only then is the body read, into an array of exactly that size, from a stream: a gzip bomb
    never unpacks beyond what its header promised.
    """
    path = regular_file(path)
    if expected_md5 is not None and (actual := md5(path)) != expected_md5:
        raise UserError(f"{path}: checksum mismatch (md5 {actual}, the official file has {expected_md5})")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return _read_idx_stream(f, path, limits)
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{path}: corrupt or truncated gzip file ({err})") from None


def _read_idx_stream(f: io.BufferedIOBase, path: Path, limits: Limits) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    if magic[2] != 0x08:
        raise UserError(f"{path}: IDX element type 0x{magic[2]:02x} is not unsigned byte (0x08)")
    ndim = magic[3]
    if ndim == 0:
        raise UserError(f"{path}: IDX header declares 0 dimensions")
    sizes = f.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise UserError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(ndim))
    expected = check_elements(str(path), shape, limits, declared_by="IDX header")
    if expected == 0:
        raise UserError(f"{path}: IDX header declares shape {shape}, an empty array")
    if path.suffix == ".gz" and 4 + 4 * ndim + expected > limits.max_decompressed_bytes:
        what = f"IDX header declares {4 + 4 * ndim + expected:,} unpacked bytes"
        raise limit_error(str(path), what, "max_decompressed_bytes", limits)
    data = np.empty(expected, dtype=np.uint8)
    held = _read_into(f, data.data)  # the array's own buffer, written in place
    if held < expected:
        raise UserError(f"{path}: IDX header promises {expected} values of shape {shape}, file holds {held}")
    if f.read(1):
        raise UserError(f"{path}: IDX header promises {expected} values of shape {shape}, file holds more")
    return data.reshape(shape)


def _read_into(f: io.BufferedIOBase, view: memoryview, chunk: int = 1 << 20) -> int:
    """Fill `view` from `f` in chunks; the number of bytes read (fewer at end of file)."""
    done = 0
    while done < len(view):
        block = f.read(min(chunk, len(view) - done))
        if not block:
            break
        view[done : done + len(block)] = block
        done += len(block)
    return done
