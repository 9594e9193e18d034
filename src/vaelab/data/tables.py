"""Text tables: comma-separated files of numbers and Larochelle's whitespace-separated .amat files.

A CSV's first row is a header only when none of its fields is a number (and one is not empty):
a first data row with a typo ("0.5,O.3") is then an error at that cell, not a header that drops a
row without a word. A UTF-8 byte-order mark is stripped. A missing value (an empty cell or NaN)
is an error naming its line and column.
"""

from __future__ import annotations

import array
import csv
import math
from pathlib import Path

import numpy as np

from vaelab.data.arrays import FLOAT32_MAX
from vaelab.data.checks import text_file, warnings_as_errors
from vaelab.errors import UserError
from vaelab.limits import Limits, limit_error


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def is_header(fields: list[str]) -> bool:
    """A header row: no field is a number, and at least one is not empty."""
    cells = [cell.strip() for cell in fields]
    return any(cells) and all(_number(cell) is None for cell in cells if cell)


def read_csv(path: str | Path, limits: Limits) -> np.ndarray:
    """A CSV of numbers as a float32 (rows, columns) array; blank lines are skipped."""
    path = text_file(path, limits)
    values = array.array("f")
    columns = None
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            rows = csv.reader(f)
            for row in rows:
                line = rows.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if columns is None and is_header(row):
                    columns = len(row)
                    continue
                if columns is not None and len(row) != columns:
                    raise UserError(
                        f"{path}: line {line} has {len(row)} columns, the first row has {columns}"
                    )
                columns = len(row)
                for column, cell in enumerate(row, start=1):
                    values.append(_cell(cell, path, line, column))
                if len(values) > limits.max_array_elements:
                    what = f"table of at least {len(values):,} numbers"
                    raise limit_error(str(path), what, "max_array_elements", limits)
    except csv.Error as err:
        raise UserError(f"{path}: not a readable CSV file ({err})") from None
    if not values or columns is None:
        raise UserError(f"{path}: no data rows")
    return np.frombuffer(values, dtype=np.float32).reshape(-1, columns).copy()


def _cell(cell: str, path: Path, line: int, column: int) -> float:
    text = cell.strip()
    if not text:
        raise UserError(f"{path}: line {line}, column {column}: missing value (empty cell)")
    value = _number(text)
    if value is None:
        raise UserError(f"{path}: line {line}, column {column}: non-numeric cell {text[:40]!r}")
    if math.isnan(value):
        raise UserError(f"{path}: line {line}, column {column}: missing value ({text})")
    if not abs(value) <= FLOAT32_MAX:
        raise UserError(f"{path}: line {line}, column {column}: {text[:40]} is outside the float32 range")
    return value


def read_amat(path: str | Path, limits: Limits) -> np.ndarray:
    """A whitespace-separated table of numbers (Larochelle's .amat) as a float32 2-D array."""
    path = text_file(path, limits)
    if (bits := _binary_table(path.read_bytes())) is not None:
        return bits
    try:
        with warnings_as_errors():
            return np.loadtxt(path, dtype=np.float32, ndmin=2)
    except (ValueError, Warning) as err:
        raise UserError(f"{path}: not a whitespace-separated table of numbers ({err})") from None


def _binary_table(raw: bytes) -> np.ndarray | None:
    """Larochelle's binarized MNIST layout, parsed on the bytes at once: every line the same
    length, "c c ... c" (an optional space before the newline) with each cell c the character 0
    or 1 (the train split's 39 million cells). None for any other layout, which loadtxt reads."""
    b = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(b == ord("\n"))
    if not newlines.size or newlines[0] < 1:
        return None
    width = int(newlines[0]) + 1  # bytes per line, its newline included
    if b.size % width or not np.array_equal(newlines, np.arange(width - 1, b.size, width)):
        return None
    lines = b.reshape(-1, width)[:, :-1]  # (rows, width - 1) without the newlines
    cells, separators = lines[:, ::2], lines[:, 1::2]
    if not ((cells == ord("0")) | (cells == ord("1"))).all() or not (separators == ord(" ")).all():
        return None
    return (cells - ord("0")).astype(np.float32)
