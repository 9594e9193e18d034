"""Tabular data end to end: the data-dependent defaults of a run, and rows out in the user's units.

Tabular data are rows of numbers, x: (N, D) float (a csv, or a 2-D float array), whose columns
have names (`Splits.column_names`). When training starts, `resolve` turns the config's `auto`
settings into what the data call for, and the resolved config is what the run stores:

- model.likelihood auto: bernoulli if every column holds only 0 and 1, gaussian if none does,
  else mixed (Bernoulli for the 0/1 columns, Gaussian for the others; `vaelab.columns`); data
  that are not tabular get bernoulli, as before;
- model.sigma auto: learned per column for tabular data, else `AUTO_SIGMA`;
- data.standardize auto: on for tabular data with a Gaussian column, and the train split's means
  and scales are stored in config.json (data.standardize_mean, data.standardize_scale), so every
  later command scores, samples and reconstructs in the units the model was trained in.

Every log-density vaelab reports is of the data as given: log p(x) = log p_model(y) - sum_d log
scale_d for y the standardized row (`Standardize.log_det_nats`), so rescaling a column by c moves
it by exactly -log c. Samples and reconstructions are mapped back through the transform's inverse
and written as rows under the column names (`write_rows`: .csv or .npy).
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vaelab import runs
from vaelab.config import AUTO_SIGMA, RunConfig
from vaelab.data import Splits, given_standardization, load_data
from vaelab.data.tables import binary_columns, standardize_step, standardized
from vaelab.data.transforms import Standardize, Transform
from vaelab.devices import make_generator, model_device, resolve_device
from vaelab.distributions import draw
from vaelab.errors import UserError
from vaelab.models import Likelihood, Model

SAMPLE_ROWS = 1000
"""Rows `write_samples` decodes when not told how many."""


def resolve(config: RunConfig, splits: Splits) -> tuple[RunConfig, Splits]:
    """`config` with its data-dependent `auto` settings resolved from `splits` (see the module's
    docstring), and the splits with the transform the resolved config names. A resolved config
    resolves to itself, so a resumed run keeps its settings."""
    where = config.data.source
    tabular = splits.column_names is not None and config.data.binarize == "none"
    model, data = config.model, config.data
    likelihood = model.likelihood
    if likelihood == "auto":
        binary = binary_columns(splits) if tabular else (True,)
        likelihood = "bernoulli" if all(binary) else "mixed" if any(binary) else "gaussian"
    if likelihood == "mixed" and not tabular:
        raise UserError(
            f"{where}: model.likelihood mixed: applies to tabular data (rows of numbers, not binarized); "
            f"these examples have shape {list(splits.x_shape)}"
        )
    sigma = model.sigma
    if sigma == "auto":
        sigma = None if tabular and likelihood != "bernoulli" else AUTO_SIGMA
    elif likelihood == "bernoulli" and model.likelihood == "auto":
        raise UserError(
            f"{where}: model.sigma: ignored (likelihood auto is bernoulli for these data: "
            f"{'every column holds only 0 and 1' if tabular else 'they are not a table of measurements'})"
        )
    standardize = data.standardize
    if standardize == "auto":
        standardize = "on" if tabular and likelihood != "bernoulli" else "off"
    elif standardize == "on" and likelihood == "bernoulli":
        raise UserError(
            f"{where}: data.standardize on: the bernoulli likelihood scores values in [0, 1] as stored"
        )
    plain = Transform(tuple(s for s in splits.transform.steps if not isinstance(s, Standardize)))
    splits = standardized(
        replace(splits, transform=plain), standardize, given_standardization(data), data.binarize, where
    )
    step = standardize_step(splits.transform)
    resolved = config.replace(
        data={
            "standardize": standardize,
            "standardize_mean": None if step is None else step.mean,
            "standardize_scale": None if step is None else step.scale,
        },
        model={"likelihood": likelihood, "sigma": sigma},
    )
    return resolved, splits


def set_bernoulli_columns(model: Model, splits: Splits) -> None:
    """Mark the 0/1 columns of tabular `splits` as the Bernoulli columns of a mixed likelihood
    (a buffer of the model's head, saved with its weights); other likelihoods have none."""
    head: Likelihood = model.likelihood_head
    if head.kind == "mixed":
        head.bernoulli_columns.copy_(torch.tensor(binary_columns(splits)))


# ----------------------------------------------------------------------------- rows out


def run_transform(run_dir: Path, config: RunConfig) -> Transform:
    """The transform of a run's data, without reading them for a tabular run (its
    standardization is in config.json); other runs' data are loaded for it."""
    if runs.read_run_info(run_dir).columns is not None:
        step = given_standardization(config.data)
        return Transform(() if step is None else (step,))
    return load_data(config.data, config.limits).transform


def column_names(run_dir: Path, x_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The names a run's rows are written under: a tabular run's columns (run.json), else the
    flattened dims x1..xD of an example."""
    columns = runs.read_run_info(run_dir).columns
    if columns is not None:
        return tuple(columns)
    return tuple(f"x{j}" for j in range(1, int(np.prod(x_shape)) + 1))


@torch.no_grad()
def sampled_rows(model: Model, transform: Transform, n: int, *, mode: str = "mean", seed: int = 0) -> Tensor:
    """n rows z ~ p(z) decoded (an AE: z ~ N(0, I)) as the decoder mean E[x|z] (mode "mean") or a
    draw x ~ p(x|z) ("sample"), in the data's units: transform.inverse of the model's output.
    (n, *x_shape) float32."""
    if mode not in ("mean", "sample"):
        raise UserError(f"mode {mode!r} is not one of mean, sample")
    generator = make_generator(model_device(model), seed)  # draws where the model runs
    z = draw(model.prior(), (n,), generator)  # (n, Z)
    p_x_given_z = model.likelihood(z)
    y = p_x_given_z.mean if mode == "mean" else draw(p_x_given_z, (), generator)
    return transform.inverse(y.cpu())


@torch.no_grad()
def reconstructed_rows(model: Model, transform: Transform, x_stored: Tensor) -> Tensor:
    """E[x | z = E_q[z|x]] of stored rows x: (N, *x_shape), in the data's units, on the CPU; the
    model runs on its device."""
    x = transform(x_stored).to(model_device(model))
    return transform.inverse(model.likelihood(model.posterior(x).mean).mean.cpu())


def write_rows(path: str | Path, rows: Tensor | np.ndarray, names: tuple[str, ...]) -> Path:
    """Rows (N, *x_shape) into `path`: .csv (a header of `names`, one example per line, flattened;
    each number in the fewest digits that read back as the same float32) or .npy (float32, the
    examples' shape).
    Written atomically."""
    path = Path(path)
    values = np.asarray(rows.detach().cpu() if isinstance(rows, Tensor) else rows, dtype=np.float32)
    if path.suffix == ".npy":
        runs.atomic_write(path, lambda tmp: _save_npy(tmp, values))
        return path
    if path.suffix != ".csv":
        raise UserError(
            f"{path}: rows are written as .csv or .npy, not {path.suffix or 'a file without suffix'}"
        )
    flat = values.reshape(len(values), -1)
    if flat.shape[1] != len(names):
        raise ValueError(f"{len(names)} names for rows of {flat.shape[1]} numbers")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([[str(v) for v in row] for row in flat])  # float32's shortest round-trip digits
    runs.write_text(path, text.getvalue())
    return path


def write_samples(
    run_dir: str | Path,
    path: str | Path | None = None,
    *,
    n: int | None = None,
    mode: str = "mean",
    seed: int = 0,
    device: str = "cpu",
) -> Path:
    """n rows (default `SAMPLE_ROWS`) decoded from z ~ p(z) (see `sampled_rows`) into `path`
    (.csv or .npy; default RUN/samples.csv), in the data's units, under the column names; the
    model runs on `device`."""
    run_dir = runs.check_run_dir(run_dir)
    config, model = runs.read_config(run_dir), runs.load_model(run_dir, device=resolve_device(device))
    rows = sampled_rows(model, run_transform(run_dir, config), n or SAMPLE_ROWS, mode=mode, seed=seed)
    path = Path(path) if path is not None else run_dir / "samples.csv"
    return write_rows(path, rows, column_names(run_dir, model.x_shape))


def write_reconstructions(
    run_dir: str | Path,
    path: str | Path | None = None,
    *,
    n: int | None = None,
    split: str = "test",
    seed: int = 0,
    device: str = "cpu",
) -> Path:
    """The reconstructions E[x | z = E_q[z|x]] of `split`'s rows into `path` (.csv or .npy;
    default RUN/reconstructions.csv), in the data's units, under the column names: every row of
    the split in its order, or n seeded random ones (in their order) when n is given. The model
    runs on `device`."""
    run_dir = runs.check_run_dir(run_dir)
    config, model = runs.read_config(run_dir), runs.load_model(run_dir, device=resolve_device(device))
    splits = load_data(config.data, config.limits)
    x = splits.split(split)
    runs.check_example_shape(run_dir, model.x_shape, x, config.data.source)
    if n is not None:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n].sort().values]
    path = Path(path) if path is not None else run_dir / "reconstructions.csv"
    return write_rows(
        path, reconstructed_rows(model, splits.transform, x), column_names(run_dir, model.x_shape)
    )


def _save_npy(path: str, values: np.ndarray) -> None:
    with open(path, "wb") as f:  # (np.save on a name would append .npy to a temporary one)
        np.save(f, values)
