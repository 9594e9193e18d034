"""`Run`: a trained run loaded for looking at it (figures, reports, an explorer page).

    run = Run("runs/demo/vae")            # model on CPU in eval mode, config, test split, labels
    run.x.shape, run.labels, run.stats.active_units, run.evaluation()

Loading reads the run's config and weights and its data split once; the latent statistics over
the split (`vaelab.diagnostics.latent_statistics`) are computed on first use and kept.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaelab import runs
from vaelab.data import load_run_data
from vaelab.devices import resolve_device
from vaelab.diagnostics import LatentStatistics
from vaelab.errors import UserError
from vaelab.viz.conditional import class_names, code_statistics, encode, is_conditional

SPLITS = ("train", "valid", "test")


class Run:
    """A run directory's model, config, data and evaluation, loaded once and shared by its figures.

    dir: the run directory; config: its RunConfig; model: the best-validation weights, in eval
    mode on `device` (figures send it their inputs and take the results back to the CPU);
    splits: the run's data (`vaelab.data.Splits`); split: the split figures are drawn from;
    x: (N, *x_shape) that split, on the CPU; labels: (N,) int or None; label_names: the class of
    each label code where the data name them (a folder's sub-folders), else None; stats: latent
    statistics over x.
    """

    def __init__(self, run_dir: str | Path, *, split: str = "test", device: str = "cpu") -> None:
        if split not in SPLITS:
            raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        self.dir = runs.check_run_dir(run_dir)
        self.config = runs.read_config(self.dir)
        self.model = runs.load_model(self.dir, device=resolve_device(device))  # x stays on the CPU
        self.splits = load_run_data(self.config)
        self.split = split
        self.x: Tensor = self.splits.inputs(split)
        runs.check_example_shape(self.dir, self.model.x_shape, self.x, self.config.data.source)
        self.labels: Tensor | None = self.splits.labels(split)
        self.label_names: tuple[str, ...] | None = self.splits.label_names

    @property
    def column_names(self) -> tuple[str, ...]:
        """The names of a tabular run's columns (x1..xD for data without names)."""
        names = self.splits.column_names
        return names if names is not None else tuple(f"x{j}" for j in range(1, self.x[0].numel() + 1))

    @property
    def deterministic(self) -> bool:
        """Whether the model is an autoencoder (a point-mass code: no prior, KL or ELBO)."""
        return bool(getattr(self.model, "deterministic", False))

    @cached_property
    def stats(self) -> LatentStatistics:
        """KL per latent dim, A_u = Cov_x(E_q[z_u]) and the active units over `x` (for a model
        conditional on a label, of q(z|x, y) at each row's own label y)."""
        if is_conditional(self.model) and self.labels is None:
            raise UserError(
                f"{self.dir}: a model conditional on a label needs the {self.split} split's labels"
            )
        return code_statistics(self.model, self.x, self.labels)

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch records of metrics.jsonl (empty before the first epoch ends)."""
        return runs.read_metrics(self.dir)

    def evaluation(self) -> dict[str, Any] | None:
        """RUN/eval.json (the test-split evaluation) as a dict, or None before `evaluate`."""
        path = self.dir / "eval.json"
        return runs.read_evaluation(path) if path.is_file() else None

    def base_code(self, index: int | None) -> tuple[Tensor | None, str]:
        """The latent point at which figures hold the dims they do not vary, and its description:
        None (the prior mean 0) for index None, else E_q[z|x] of row `index` of the split (for a
        model conditional on a label, E_q[z|x, y] at the row's own label): (Z,)."""
        if index is None:
            return None, "0 (the prior mean)"
        if not 0 <= index < len(self.x):
            raise UserError(f"base {index}: the {self.split} split has rows 0..{len(self.x) - 1}")
        rows = slice(index, index + 1)
        z = encode(self.model, self.x[rows], None if self.labels is None else self.labels[rows])[0]
        if is_conditional(self.model) and self.labels is not None:
            name = class_names(self.model)[int(self.labels[index])]
            return z, f"E_q[z|x, y] of {self.split} image #{index} at its own label y = {name}"
        return z, f"the posterior mean of {self.split} image #{index}"

    def random_rows(self, n: int, seed: int) -> Tensor:
        """n seeded random row indices of the split (test files are often sorted by class, so a
        prefix would show one digit): (min(n, N),) int64."""
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(len(self.x), generator=generator)[:n]
