"""Fuzz the csv source's options and the tabular commands: tables with headers, missing values of
every spelling, constant and 0/1 columns and odd numbers, read with drop_missing and standardize
on, off and auto; and `sample`/`reconstruct` of a tabular run with --out of any name and --n.

An accepted table must give splits whose model input is finite, whose column names match its
columns, and whose standardization undoes exactly up to float32 rounding (relative to the value,
the column's mean and its scale) in the data's units.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.config import DataConfig
from vaelab.data import load_data
from vaelab.data.tables import MISSING

FUZZ = settings.get_profile("vaelab-fuzz")
FUZZ_RUN = settings.get_profile("vaelab-fuzz-run")
SPLITS = ("train", "valid", "test")

NUMBERS = st.one_of(
    st.integers(-5, 5).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(["0", "1", "1e38", "-3.4e38", "1e-45", "inf", "1e39", "0x1p3", " 2 ", "+.5"]),
)
CELLS = st.one_of(
    NUMBERS, NUMBERS, NUMBERS, st.sampled_from(sorted(MISSING) + ["NaN", "N/A", "NULL", "abc", '"1,5"'])
)
NAMES = st.one_of(
    st.sampled_from(["a", "b", "height (cm)", "", "x1", "é", '"q,uoted"', "a"]), st.text(max_size=6)
)


@st.composite
def tables(draw) -> str:
    columns = draw(st.integers(1, 4))
    lines = []
    if draw(st.booleans()):
        lines.append(",".join(draw(st.lists(NAMES, min_size=columns, max_size=columns))))
    for _ in range(draw(st.integers(0, 14))):
        width = columns if draw(st.integers(0, 9)) else draw(st.integers(1, 5))
        lines.append(",".join(draw(st.lists(CELLS, min_size=width, max_size=width))))
    return "\n".join(lines) + ("\n" if draw(st.booleans()) else "")


def table_invariants(splits) -> str | None:
    """What an accepted table promises: names for its columns, finite input, an exact inverse."""
    names = splits.column_names
    if names is None or len(names) != splits.x_shape[0] or len(set(names)) != len(names):
        return f"column names {names} for examples of shape {splits.x_shape}"
    for split in SPLITS:
        x, y = splits.split(split), splits.inputs(split)
        if x.dtype != torch.float32 or len(x) == 0 or not y.isfinite().all():
            return f"{split}: dtype {x.dtype}, {len(x)} rows, finite input {bool(y.isfinite().all())}"
        back = splits.transform.inverse(y).double()
        # float32 input: an exact inverse up to rounding relative to the column's mean and scale
        step = splits.transform.steps[-1] if splits.transform.steps else None
        size = 0.0 if step is None else torch.tensor(step.mean).abs() + torch.tensor(step.scale)
        if not ((back - x.double()).abs() <= 1e-6 * (x.double().abs() + size)).all():
            return f"{split}: the standardization does not undo"
    return None


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-tables")


@FUZZ
@given(
    text=tables(),
    drop_missing=st.booleans(),
    standardize=st.sampled_from(["auto", "on", "off"]),
)
def test_fuzz_csv_options(fuzz, work, text, drop_missing, standardize):
    (work / "t.csv").write_text(text, encoding="utf-8")
    config = DataConfig(source=f"csv:{work / 't.csv'}", drop_missing=drop_missing, standardize=standardize)
    fuzz.check("csv options", lambda: load_data(config), accepted=table_invariants)


@pytest.fixture(scope="module")
def tabular_run(work):
    """A VAE trained for one epoch on a small table with a 0/1 column (a mixed likelihood)."""
    import numpy as np

    from vaelab.config import RunConfig
    from vaelab.train import train

    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(10, 3, 80), rng.integers(0, 2, 80), rng.normal(0, 1e3, 80)])
    csv = work / "table.csv"
    csv.write_text("a,flag,c\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")
    config = RunConfig().replace(
        data={"source": f"csv:{csv}"},
        model={"latent_dim": 2, "hidden": (8,)},
        train={"epochs": 1, "batch_size": 16},
    )
    return train(config, work / "run", progress=False).run_dir


@FUZZ_RUN
@given(
    command=st.sampled_from(["sample", "reconstruct"]),
    name=st.one_of(
        st.sampled_from(["s.csv", "s.npy", "s.png", "s.txt", "s", ".csv", "dir/s.csv", "s.CSV"]),
        st.text(max_size=8).map(lambda t: t + ".csv"),
    ),
    n=st.one_of(st.none(), st.integers(-1, 3000).map(str), st.sampled_from(["x", "1e3"])),
)
def test_fuzz_tabular_rows_out(fuzz, tabular_run, work, command, name, n):
    out = work / "out"
    out.mkdir(exist_ok=True)
    argv = [command, str(tabular_run), "--out", str(out / name)]
    if n is not None:
        argv += ["--n", n]
    fuzz.cli(f"{command} rows", argv, must_refuse=False, unchanged_on_failure=tabular_run)
