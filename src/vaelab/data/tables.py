"""Text tables: comma-separated files of numbers and Larochelle's whitespace-separated .amat files;
the `csv:` source and the standardization of tabular data.

A CSV's first row is a header only when none of its fields is a number (and one is not empty):
a first data row with a typo ("0.5,O.3") is then an error at that cell, not a header that drops a
row without a word. The header's names are kept (`Table.names`; an empty name becomes x<j>), so
samples and reconstructions are written under them. A UTF-8 byte-order mark is stripped. A
missing value (an empty cell, NaN, NA, N/A, null, None or ?) is an error naming its line, data row
and column, unless the caller drops the rows that hold one (`data.drop_missing`).
"""

from __future__ import annotations

import array
import csv as csv_module
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from vaelab.config import DataConfig
from vaelab.data.arrays import FLOAT32_MAX
from vaelab.data.checks import regular_file, text_file, warnings_as_errors
from vaelab.data.splits import SPLITS, Splits, split_arrays
from vaelab.data.transforms import Standardize, Transform
from vaelab.errors import UserError
from vaelab.limits import Limits, limit_error

log = logging.getLogger(__name__)

MISSING = frozenset({"", "na", "n/a", "nan", "-nan", "null", "none", "?"})
"""Cells that mean "no value" (compared in lower case, stripped): pandas' and the UCI archive's."""


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def is_header(fields: list[str]) -> bool:
    """A header row: no field is a number, and at least one is not empty."""
    cells = [cell.strip() for cell in fields]
    return any(cells) and all(_number(cell) is None for cell in cells if cell)


def default_names(columns: int) -> tuple[str, ...]:
    """x1 .. xD: the names of the columns of a table without a header (numbered from 1, as every
    message numbers them)."""
    return tuple(f"x{j}" for j in range(1, columns + 1))


@dataclass(frozen=True)
class Table:
    """A CSV's numbers, (rows, columns) float32; the header's names (None without a header); the
    file lines of the rows dropped for a missing value."""

    values: np.ndarray
    names: tuple[str, ...] | None
    dropped_lines: tuple[int, ...] = ()


def read_csv(path: str | Path, limits: Limits, *, drop_missing: bool = False) -> Table:
    """A CSV of numbers (blank lines skipped); a missing value is an error naming its line, data row
    and column, or with `drop_missing` its row is left out."""
    path = text_file(path, limits)
    values = array.array("f")
    columns, names, dropped, row_number = None, None, [], 0
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            rows = csv_module.reader(f)
            for row in rows:
                line = rows.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if columns is None and is_header(row):
                    columns, names = len(row), _header_names(row, path)
                    continue
                if columns is not None and len(row) != columns:
                    raise UserError(
                        f"{path}: line {line} has {len(row)} columns, the first row has {columns}"
                    )
                columns = len(row)
                row_number += 1
                cells = [
                    _cell(cell, path, line, row_number, column, names) for column, cell in enumerate(row, 1)
                ]
                if any(value is None for value in cells):
                    if not drop_missing:
                        column = cells.index(None) + 1
                        raise UserError(
                            f"{path}: {_where(line, row_number, column, names)}: missing value "
                            f"({row[column - 1].strip() or 'empty cell'}); data.drop_missing drops such rows"
                        )
                    dropped.append(line)
                    continue
                values.extend(cells)  # type: ignore[arg-type]  # (no None left)
                if len(values) > limits.max_array_elements:
                    what = f"table of at least {len(values):,} numbers"
                    raise limit_error(str(path), what, "max_array_elements", limits)
    except csv_module.Error as err:
        raise UserError(f"{path}: not a readable CSV file ({err})") from None
    if columns is None or (not values and not dropped):
        raise UserError(f"{path}: no data rows")
    if not values:
        raise UserError(f"{path}: every one of the {len(dropped)} data rows has a missing value")
    if dropped:
        shown = ", ".join(map(str, dropped[:10])) + (" ..." if len(dropped) > 10 else "")
        log.warning("%s: dropped %d rows with a missing value (lines %s)", path, len(dropped), shown)
    table = np.frombuffer(values, dtype=np.float32).reshape(-1, columns).copy()
    return Table(table, names, tuple(dropped))


def _header_names(row: list[str], path: Path) -> tuple[str, ...]:
    names = tuple(cell.strip() or f"x{j}" for j, cell in enumerate(row, 1))
    seen: dict[str, int] = {}
    for j, name in enumerate(names, 1):
        if name in seen:
            raise UserError(f"{path}: header: columns {seen[name]} and {j} are both named {name[:40]!r}")
        seen[name] = j
    return names


def _where(line: int, row: int, column: int, names: tuple[str, ...] | None) -> str:
    named = f" ({names[column - 1][:40]!r})" if names else ""
    return f"line {line} (data row {row}), column {column}{named}"


def _cell(
    cell: str, path: Path, line: int, row: int, column: int, names: tuple[str, ...] | None
) -> float | None:
    """The number in `cell`, or None for a missing value."""
    text = cell.strip()
    if text.lower() in MISSING:
        return None
    value = _number(text)
    if value is None:
        where = _where(line, row, column, names)
        raise UserError(f"{path}: {where}: non-numeric cell {text[:40]!r}")
    if math.isnan(value):  # (spellings such as "NAN(123)")
        return None
    if not abs(value) <= FLOAT32_MAX:
        where = _where(line, row, column, names)
        raise UserError(f"{path}: {where}: {text[:40]} is outside the float32 range")
    return value


def csv(arg: str, limits: Limits, config: DataConfig) -> Splits:
    """The `csv:FILE` source: tabular rows of numbers (an optional header line naming the columns),
    split 80/10/10; column_names are the header's, else x1..xD. config.drop_missing: leave out
    the rows with a missing value."""
    path = regular_file(arg)
    table = read_csv(path, limits, drop_missing=config.drop_missing)
    splits = split_arrays(path.name, table.values, None)
    return replace(splits, column_names=table.names or default_names(table.values.shape[1]))


# ------------------------------------------------------------------------------ standardization


def binary_columns(splits: Splits) -> tuple[bool, ...]:
    """For tabular splits (N, D): whether each column holds only 0 and 1, over every split."""
    parts = [splits.split(s) for s in SPLITS]
    return tuple(bool(v) for v in torch.stack([((x == 0) | (x == 1)).all(0) for x in parts]).all(0))


def standardization(splits: Splits, where: str) -> Standardize:
    """Means and scales (population standard deviations) of the train split's columns, in float64;
    a 0/1 column is left alone (mean 0, scale 1: a Bernoulli column scores its bits). A constant
    column has no scale and no density: an error naming it."""
    x = splits.train.double()
    mean, scale = x.mean(0), x.std(0, correction=0)
    binary = binary_columns(splits)
    names = splits.column_names or default_names(x.shape[1])
    for j, (bits, s) in enumerate(zip(binary, scale.tolist(), strict=True)):
        if not bits and not s > 0:
            raise UserError(
                f"{where}: column {j + 1} ({names[j][:40]!r}) is constant ({float(mean[j]):g}) in the "
                "train split: it has no scale to standardize by and no density; drop the column"
            )
    keep = torch.tensor(binary)
    mean, scale = torch.where(keep, 0.0, mean), torch.where(keep, 1.0, scale)
    return Standardize(tuple(mean.tolist()), tuple(scale.tolist()))


def standardized(
    splits: Splits, standardize: str, given: Standardize | None, binarize: str, where: str
) -> Splits:
    """`splits` with the Standardize step appended to its transform, per `data.standardize`
    (auto: on for tabular data that are not binarized) with the means and scales `given` (a run's
    own) or else the train split's; unchanged when off. Refused for data that are not tabular."""
    tabular = splits.column_names is not None
    if standardize == "off" or (standardize == "auto" and (not tabular or binarize != "none")):
        return splits
    if not tabular:
        raise UserError(
            f"{where}: data.standardize on: applies to tabular data (rows of numbers, (N, D) float); "
            f"these examples have shape {list(splits.x_shape)} and dtype {str(splits.train.dtype)[6:]}"
        )
    if binarize != "none":
        raise UserError(
            f"{where}: data.standardize on: binarized data ({binarize}) are bits, not measurements"
        )
    step = standardization(splits, where) if given is None else given
    columns = splits.x_shape[0]
    if len(step.mean) != columns:
        raise UserError(
            f"{where}: data.standardize_mean: {len(step.mean)} numbers for the data's {columns} columns"
        )
    binary = binary_columns(splits)
    for j, (bits, m, s) in enumerate(zip(binary, step.mean, step.scale, strict=True)):
        if bits and (m, s) != (0.0, 1.0):
            raise UserError(
                f"{where}: data.standardize_mean/scale: column {j + 1} holds only 0 and 1 and is left "
                f"alone (mean 0, scale 1), got mean {m:g}, scale {s:g}"
            )
    splits = replace(splits, transform=Transform((*splits.transform.steps, step)))
    names = splits.column_names or default_names(columns)
    for split in SPLITS:  # a scale far below a column's spread sends values beyond float32
        finite = splits.inputs(split).isfinite().all(0)
        if not finite.all():
            j = int((~finite).nonzero()[0, 0])
            raise UserError(
                f"{where}: column {j + 1} ({names[j][:40]!r}): the {split} split's values lie beyond the "
                f"float32 range once standardized (train scale {step.scale[j]:g}); the column barely "
                "varies in the train split: drop or rescale it, or set data.standardize off"
            )
    return splits


def standardize_step(transform: Transform) -> Standardize | None:
    """The transform's Standardize step, if it has one."""
    steps = [step for step in transform.steps if isinstance(step, Standardize)]
    return steps[0] if steps else None


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
