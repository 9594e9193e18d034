"""Draw a run's figures into PNG files: one kind (`plot_run`) or all of them (`plot_all`).

The figures are those of the registry `vaelab.viz.figures`: their data come from its `make`
functions, their drawing from `vaelab.viz.draw.render`, their file names from `figure_path`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from torch import Tensor

from vaelab import runs
from vaelab.errors import UserError
from vaelab.evaluate import eval_path
from vaelab.viz.conditional import conditional_config
from vaelab.viz.draw import render, save_figure
from vaelab.viz.figures import (
    DEFAULT_OPTIONS,
    FIGURE_KINDS,
    FIGURES_DIR,
    FigureOptions,
    figure_file_name,
    figure_path,
    figures_for,
    not_applicable,
    with_figure_label,
    wrong_data,
)
from vaelab.viz.images import reconstruction_rows, sample_grid
from vaelab.viz.run import Run

log = logging.getLogger(__name__)


def draw_figure(run: Run, kind: str, path: str | Path, options: FigureOptions = DEFAULT_OPTIONS) -> Path:
    """Draw figure `kind` of a loaded run into the PNG `path`; a UserError says why it cannot."""
    if kind not in FIGURE_KINDS:
        raise UserError(f"figure kind {kind!r} is not one of {', '.join(FIGURE_KINDS)}")
    figure = FIGURE_KINDS[kind]
    reason = wrong_data(run.dir, kind) or figure.applies(run.dir, run.config)
    if reason is not None:
        raise UserError(reason)
    return save_figure(render(figure.make(run, options)), path)


def plot_run(
    run_dir: str | Path,
    kind: str,
    path: str | Path | None = None,
    options: FigureOptions = DEFAULT_OPTIONS,
    *,
    device: str = "cpu",
) -> Path:
    """Draw one figure kind of a run into the PNG `path` (default `figure_path(run_dir, kind, options)`,
    with the label a conditional run's figure is decoded under, `with_figure_label`), its model on
    `device`."""
    if kind not in FIGURE_KINDS:
        raise UserError(f"figure kind {kind!r} is not one of {', '.join(FIGURE_KINDS)}")
    reason = not_applicable(run_dir, kind)
    if reason is not None:  # before the model and its data are loaded
        raise UserError(reason)
    run = Run(run_dir, split=options.split, device=device)
    options = with_figure_label(run.config, kind, options, run.labels)
    path = Path(path) if path is not None else figure_path(run_dir, kind, options)
    return draw_figure(run, kind, path, options)


def plot_all(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    options: FigureOptions = DEFAULT_OPTIONS,
    *,
    only_missing: bool = False,
    device: str = "cpu",
) -> dict[str, Path]:
    """Every figure of `ALL_FIGURES` for the run's kind of data (`figures_for`) into out_dir
    (default RUN/figures): registered file name -> path.

    Each figure is drawn with `options` changed by its entry (e.g. the wide grid's range); with
    other than the default options a file is named after them (`figure_file_name`), never after the
    default figure, and a figure a conditional run decodes under one label is named after it
    (`with_figure_label`). A figure that does not apply (the ELBO decomposition of an AE, or before
    evaluation) is skipped with a log message. only_missing: keep PNGs that already exist.
    The run's metrics.jsonl and eval.json are validated first: a damaged one is an error before
    any file is written, not a figure skipped.
    """
    run_dir = runs.check_run_dir(run_dir)
    runs.read_metrics(run_dir)
    if eval_path(run_dir).is_file():
        runs.read_evaluation(eval_path(run_dir))
    out_dir = Path(out_dir) if out_dir is not None else run_dir / FIGURES_DIR
    config = runs.read_config(run_dir)
    run = None
    if options.base is not None and conditional_config(config):  # the base image's label names files
        run = Run(run_dir, split=options.split, device=device)
    labels = None if run is None else run.labels
    written: dict[str, Path] = {}
    todo = []
    for entry in figures_for(run_dir):  # the figures of the run's kind of data (images, tabular)
        entry_options = with_figure_label(
            config, entry.kind, dataclasses.replace(options, **entry.changes), labels
        )
        path = out_dir / figure_file_name(entry.kind, entry_options)
        if only_missing and path.is_file():
            written[entry.file_name] = path
        else:
            todo.append((entry, entry_options, path))
    if not todo:
        return written
    run = run or Run(run_dir, split=options.split, device=device)
    for entry, entry_options, path in todo:
        try:
            written[entry.file_name] = draw_figure(run, entry.kind, path, entry_options)
            log.info("%s: wrote %s", run_dir, path)
        except UserError as err:
            log.info("%s: skipped %s (%s)", run_dir, entry.file_name, err)
    return written


# ---------------------------------------------------------- figures of a model, without a run


def plot_prior_samples(model, path: str | Path, n: int = 64, *, mode: str = "mean", seed: int = 0) -> Path:
    """n prior samples z ~ p(z) decoded (an AE: codes z ~ N(0, I)) into the PNG `path`."""
    return save_figure(render(sample_grid(model, n, mode=mode, seed=seed)), path)


def plot_reconstructions(model, x: Tensor, path: str | Path) -> Path:
    """Originals (odd rows) above their reconstructions (even rows), 8 per row, into the PNG `path`."""
    return save_figure(render(reconstruction_rows(model, x, min(8, len(x)))), path)
