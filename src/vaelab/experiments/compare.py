"""AE vs VAE: the same networks, data and training budget, side by side.

`compare_runs(run_a, run_b, out)` measures both runs on the test split and writes, into `out`:

    compare.json                  the `Comparison` (`to_dict()`), units named in every key
    compare.md                    the same numbers as a markdown table
    compare-reconstructions.png   the same test images, reconstructed by each model
    compare-scatter.png           test-set posterior means (codes), coloured by label
    compare-grid.png              both decoders on the same latent grid (N(0, I) quantiles by default)
    compare-samples.png           both decoders on the same prior samples z ~ N(0, I)

The contrast the VAE lecture notes this project follows draw: an AE's code is not matched to
p(z) = N(0, I), so decoding prior samples or a grid at the prior's quantiles shows regions no
training image was coded to; a VAE's KL term pulls its codes to the prior, so every prior draw
decodes to something digit-like. An AE has no ELBO or log p(x) (a point-mass code has an infinite
KL to any density); the table says so instead of printing a number. The downstream probe
(x -> z -> y) is a logistic regression on the posterior means E_q[z|x] (the code itself for an AE).

A run conditional on a label (model.condition label) is measured and drawn through
`vaelab.viz.conditional`, as its own figures are: codes E_q[z|x, y] at each test image's own label
(`encode`), reconstructions given it, the grid decoded under the first class, its samples under
each class in turn; its ELBO and log p(x) are log p(x|y), and compare.md says so. Two runs whose
data differ only in which train labels they kept (data.labels_per_class, an M2) are compared on
the data with every label, so both probes fit the same rows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from vaelab import runs
from vaelab.data import Splits, load_run_data
from vaelab.devices import resolve_device
from vaelab.diagnostics import active_units_rule, latent_name
from vaelab.errors import UserError
from vaelab.experiments.evaluation import current_evaluation
from vaelab.viz.conditional import (
    class_cycle_decodes,
    class_names,
    code_statistics,
    cycle_columns,
    encode,
    is_conditional,
    shown_classes,
)
from vaelab.viz.draw import draw_image_grid, draw_latent_grid, draw_latent_scatter, render, save_figure
from vaelab.viz.draw_tabular import draw_column_marginals, draw_column_reconstructions, panel_size
from vaelab.viz.figures import DEFAULT_LABEL
from vaelab.viz.images import ImageGrid, as_images, image_rows, reconstructions, sample_grid, tile
from vaelab.viz.latent import grid_box, latent_grid, latent_scatter
from vaelab.viz.tabular import column_marginals, column_reconstructions, pick_rows

log = logging.getLogger(__name__)

NO_PROBE_LABELS = "the data source carries no labels, so there is nothing to probe for"


@dataclass(frozen=True)
class Probe:
    """Test accuracy of a logistic-regression probe y ~ E_q[z|x] (a fraction of the scored rows).

    chance_accuracy: the share of the most frequent class among the scored rows (what predicting
    that class always would score). protocol: which rows were fitted and which scored.
    """

    accuracy: float
    chance_accuracy: float
    num_fit: int
    num_scored: int
    num_classes: int
    protocol: str


def linear_probe(
    z_fit: np.ndarray, y_fit: np.ndarray, z_score: np.ndarray, y_score: np.ndarray, *, seed: int = 0
) -> float:
    """Accuracy on (z_score, y_score) of a multinomial logistic regression fitted on (z_fit, y_fit).

    The codes are standardized first (fitted on z_fit only): an AE's code has an arbitrary scale,
    and a probe should measure what the code separates, not how its units happen to be chosen.
    z: (N, Z) float, y: (N,) int.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(z_fit, y_fit)
    return float(probe.score(z_score, y_score))


def probe_codes(model, splits: Splits, *, binarize: str = "none", seed: int = 0) -> Probe | None:
    """Fit the probe on train-split codes and score it on the test split (None without labels).

    Where only the test split has labels (binarized-mnist), a seeded stratified half of the test
    rows is fitted and the other half scored, and `protocol` says so. With dynamic binarization
    the train split is held as grey levels; it is coded as one seeded Bernoulli draw, like the
    statically binarized test split the model is evaluated on.
    """
    from sklearn.model_selection import train_test_split

    y_test = splits.test_labels
    if y_test is None:
        return None
    z_test = encode(model, splits.inputs("test"), y_test).double().numpy()
    if splits.train_labels is not None:
        x_train = splits.inputs("train")
        if binarize == "dynamic":
            x_train = torch.bernoulli(x_train, generator=torch.Generator().manual_seed(seed))
        y_train = splits.train_labels
        z_fit, y_fit = encode(model, x_train, y_train).double().numpy(), y_train.numpy()
        z_score, y_score = z_test, y_test.numpy()
        protocol = (
            f"fitted on the {len(y_fit)} train-split codes, scored on the {len(y_score)} test-split codes"
        )
    else:
        y = y_test.numpy()
        stratify = y if np.bincount(y).min() >= 2 else None
        fit, score = train_test_split(np.arange(len(y)), test_size=0.5, random_state=seed, stratify=stratify)
        z_fit, y_fit, z_score, y_score = z_test[fit], y[fit], z_test[score], y[score]
        protocol = (
            f"only the test split has labels: a seeded ({seed}) stratified half of its {len(y)} rows "
            f"fitted ({len(fit)}), the other half scored ({len(score)})"
        )
    if len(np.unique(y_fit)) < 2:
        return None
    accuracy = linear_probe(z_fit, y_fit, z_score, y_score, seed=seed)
    chance = float(np.bincount(y_score).max() / len(y_score))
    return Probe(accuracy, chance, len(y_fit), len(y_score), int(len(np.unique(y_fit))), protocol)


@dataclass(frozen=True)
class ModelSummary:
    """One run measured on the test split. Nats are dataset means per example.

    log_p_x_given_z: E_q[log p(x|z)] (one z ~ q(z|x) for a VAE, z = f(x) for an AE).
    squared_error_per_pixel: mean over examples and pixels of (x - E[x | z = E_q[z|x]])^2, in
    squared intensity units (data in [0, 1]): comparable across likelihoods.
    elbo / kl / log_px (importance sampled, k samples, Monte Carlo standard error): None for an AE,
    with `no_elbo_reason`. code_mean / code_std: (Z,) mean and s.d. of E_q[z|x] over the test split,
    in prior s.d. units (a code matched to N(0, I) has means near 0 and s.d. near or below 1).
    given: for a model conditional on a label, what elbo and log_px are conditional on (log p(x|y)
    given each test image's true label; eval.json's `given`), else None.
    """

    run: str
    kind: str
    latent_dim: int
    parameters: int | None
    epochs: int
    best_epoch: int
    train_seconds: float
    log_p_x_given_z: float
    squared_error_per_pixel: float
    elbo: float | None
    kl: float | None
    log_px: float | None
    log_px_stderr: float | None
    log_px_k: int | None
    no_elbo_reason: str | None
    active_units: int
    code_mean: tuple[float, ...]
    code_std: tuple[float, ...]
    probe: Probe | None
    no_probe_reason: str | None
    given: str | None = None  # a conditional model: what elbo and log_px are conditional on (eval.json)

    @property
    def label(self) -> str:
        return f"{self.kind.upper()} ({Path(self.run).name})"


@dataclass(frozen=True)
class Comparison:
    """Two runs on the same data. differences: config fields that differ besides model.kind
    (empty when networks, data and budget are the same); figures: name -> PNG file in `out_dir`
    (`CompareFigure.caption_for(tabular)` describes each)."""

    out_dir: str
    data: str
    split: str
    num_examples: int
    a: ModelSummary
    b: ModelSummary
    differences: tuple[str, ...]
    figures: dict[str, str]
    tabular: bool = False  # rows of named columns: the figures show columns, not images

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["units"] = (
            "nats per example (test-split means) for log_p_x_given_z, elbo, kl, log_px; "
            "squared_error_per_pixel in squared intensity units; probe accuracies are fractions"
        )
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Comparison:
        def summary(d: dict[str, Any]) -> ModelSummary:
            d = dict(d)
            d["probe"] = Probe(**d["probe"]) if d.get("probe") else None
            d["code_mean"], d["code_std"] = tuple(d["code_mean"]), tuple(d["code_std"])
            return ModelSummary(**d)

        raw = {k: v for k, v in raw.items() if k != "units"}
        return cls(
            **{
                **raw,
                "a": summary(raw["a"]),
                "b": summary(raw["b"]),
                "differences": tuple(raw["differences"]),
            }
        )


def config_differences(config_a: dict[str, Any], config_b: dict[str, Any]) -> tuple[str, ...]:
    """'section.field: a vs b' for every field that differs, except model.kind."""
    out = []
    for section in sorted(set(config_a) | set(config_b)):
        fa, fb = config_a.get(section, {}), config_b.get(section, {})
        for name in sorted(set(fa) | set(fb)):
            if (section, name) != ("model", "kind") and fa.get(name) != fb.get(name):
                out.append(f"{section}.{name}: {fa.get(name)!r} vs {fb.get(name)!r}")
    return tuple(out)


@torch.no_grad()
def squared_error_per_pixel(model, x: Tensor, labels: Tensor | None = None, batch_size: int = 1000) -> float:
    """Mean of (x - E[x | z = E_q[z|x]])^2 over examples and pixels: x (N, *x_shape) -> float; a
    conditional model reconstructs given the rows' labels (N,): E[x | z = E_q[z|x, y], y]."""
    total = 0.0
    y_chunks = [None] * len(x.split(batch_size)) if labels is None else labels.split(batch_size)
    for chunk, y in zip(x.split(batch_size), y_chunks, strict=True):
        total += float((reconstructions(model, chunk, y) - chunk).square().sum(dtype=torch.float64))
    return total / x.numel()


def summarize_run(
    run_dir: Path, splits: Splits, *, k: int = 1000, seed: int = 0, device: str = "cpu"
) -> ModelSummary:
    """Measure one run on the test split of `splits` (which must be the run's own data), its
    model on `device`."""
    model = runs.load_model(run_dir, device=resolve_device(device))
    config = runs.read_config(run_dir)
    info = runs.run_info(run_dir)
    metrics = runs.read_metrics(run_dir)
    evaluation = current_evaluation(run_dir, k, seed, device=device)
    x_test, y_test = splits.inputs("test"), splits.test_labels
    if is_conditional(model) and y_test is None:
        raise UserError(f"{run_dir}: a model conditional on a label needs the test split's labels")
    stats = code_statistics(model, x_test, y_test)
    codes = encode(model, x_test, y_test).double()
    probe = probe_codes(model, splits, binarize=config.data.binarize, seed=seed)
    best = runs.best_record(metrics)["epoch"] if metrics else 0
    return ModelSummary(
        run=str(run_dir),
        kind=config.model.kind,
        latent_dim=model.latent_dim,
        parameters=info.get("parameters"),
        epochs=len(metrics),
        best_epoch=int(best),
        train_seconds=float(sum(r.get("seconds", 0.0) for r in metrics)),
        log_p_x_given_z=float(evaluation["log_p_x_given_z"]),
        squared_error_per_pixel=squared_error_per_pixel(
            model, x_test, y_test if is_conditional(model) else None
        ),
        elbo=evaluation.get("elbo"),
        kl=evaluation.get("kl"),
        log_px=evaluation.get("log_px"),
        log_px_stderr=evaluation.get("log_px_stderr"),
        log_px_k=evaluation.get("k"),
        no_elbo_reason=evaluation.get("note") if evaluation.get("elbo") is None else None,
        active_units=stats.active_units,
        code_mean=tuple(float(v) for v in codes.mean(0)),
        code_std=tuple(float(v) for v in codes.std(0)),
        probe=probe,
        no_probe_reason=None if probe is not None else NO_PROBE_LABELS,
        given=evaluation.get("given"),
    )


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    out_dir: str | Path,
    *,
    k: int = 1000,
    seed: int = 0,
    n_grid: int = 21,
    z_range: tuple[float, float, float, float] | None = None,
    device: str = "cpu",
) -> Comparison:
    """Measure two runs of the same data side by side and write compare.json, compare.md and
    figures; the models run on `device`."""
    run_a, run_b = runs.check_run_dir(run_a), runs.check_run_dir(run_b)
    config_a, config_b = runs.read_config(run_a), runs.read_config(run_b)
    # which train labels a run kept (an M2's labels_per_class) changes no example: both runs are
    # measured on the data with every label
    every_label = {"labels_per_class": None, "labels_seed": 0}
    data_a, data_b = (c.data.model_copy(update=every_label) for c in (config_a, config_b))
    if data_a != data_b:
        fields_a, fields_b = data_a.model_dump(), data_b.model_dump()
        differ = "; ".join(
            f"data.{name}: {fields_a[name]!r} vs {fields_b[name]!r}"
            for name in fields_a
            if fields_a[name] != fields_b[name]
        )
        raise UserError(
            f"{run_a} and {run_b} were trained on different data ({differ}); a comparison needs the same data"
        )
    out_dir = Path(out_dir)
    measured_a, measured_b = (c.replace(data=every_label) for c in (config_a, config_b))
    splits = load_run_data(measured_a)
    models = [runs.load_model(run, device=resolve_device(device)) for run in (run_a, run_b)]
    if models[0].x_shape != models[1].x_shape:
        raise UserError(f"{run_a} and {run_b} model examples of different shapes")
    runs.check_example_shape(run_a, models[0].x_shape, splits.test, config_a.data.source)
    # each run scored on its own inputs (the likelihood chooses the transform: a gaussian run's
    # 8-bit data are dequantized, a bernoulli run's are not)
    splits_b = splits if config_b.model.likelihood == config_a.model.likelihood else load_run_data(measured_b)
    summaries = [
        summarize_run(run, s, k=k, seed=seed, device=device)
        for run, s in ((run_a, splits), (run_b, splits_b))
    ]
    differences = config_differences(config_a.to_dict(), config_b.to_dict())
    if differences:
        log.warning("the two runs differ in more than the model kind: %s", "; ".join(differences))
    figures = draw_comparison(models, summaries, splits, out_dir, seed=seed, n_grid=n_grid, z_range=z_range)
    # the runs as paths relative to out_dir, so the comparison can be moved with its runs
    for i, run in enumerate((run_a, run_b)):
        summaries[i] = _with_run(summaries[i], os.path.relpath(run.resolve(), out_dir.resolve()))
    comparison = Comparison(
        str(out_dir),
        config_a.data.source,
        "test",
        len(splits.test),
        summaries[0],
        summaries[1],
        differences,
        figures,
        tabular=splits.column_names is not None,
    )
    runs.write_json(out_dir / "compare.json", comparison.to_dict())
    text = format_comparison(comparison)
    runs.write_text(out_dir / "compare.md", text)
    return comparison


def _with_run(summary: ModelSummary, run: str) -> ModelSummary:
    return replace(summary, run=run)


def resolve_run(comparison_dir: Path, run: str) -> Path:
    """A run path of compare.json, relative to the comparison directory unless absolute."""
    path = Path(run)
    return path if path.is_absolute() else Path(os.path.normpath(comparison_dir / path))


# ------------------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class CompareFigure:
    """A figure of the comparison: its file in the comparison directory and the report's caption
    (for tables, `tabular_caption` where the figure differs)."""

    file_name: str
    caption: str
    tabular_caption: str | None = None

    def caption_for(self, tabular: bool) -> str:
        return self.tabular_caption if tabular and self.tabular_caption else self.caption


COMPARE_FIGURES: dict[str, CompareFigure] = {
    "reconstructions": CompareFigure(
        "compare-reconstructions.png",
        "The same test images reconstructed by both models (decoder mean at the posterior mean); the row "
        "labels give each model's test-set squared error per pixel.",
        "Each column of the same test rows against its reconstruction by each model (decoder mean at the "
        "posterior mean), in the data's units; points on the dotted line are reconstructed exactly.",
    ),
    "scatter": CompareFigure(
        "compare-scatter.png",
        "Test-set codes E_q[z|x] of both models, coloured by label. The dashed box is the latent range the "
        "grids below decode: the VAE's codes fill the prior's bulk, the AE's sit wherever training put them.",
    ),
    "grid": CompareFigure(
        "compare-grid.png",
        "Both decoders on the same latent grid. Where the AE's code space has no training codes, its "
        "decoder shows whatever it extrapolates to.",
    ),
    "samples": CompareFigure(
        "compare-samples.png",
        "Both decoders on the same codes z ~ N(0, I) (decoder means): prior samples of the VAE; for the AE, "
        "which has no prior and was never asked to make N(0, I) meaningful, decoded codes that cover fewer "
        "digits or are malformed.",
        "Each column's distribution: test rows (filled) against rows each model makes from codes z ~ N(0, I) "
        "(x ~ p(x|z)): the VAE's prior samples; for the AE, codes its decoder was never asked to make "
        "meaningful.",
    ),
}


def draw_comparison(
    models,
    summaries: list[ModelSummary],
    splits: Splits,
    out_dir: Path,
    *,
    seed: int = 0,
    n_grid: int = 21,
    z_range=None,
) -> dict[str, str]:
    """The side-by-side figures (four for images; for tables, whose rows are not pictures, the
    columns' reconstructions and marginals and the latent scatter); returns name -> file name in
    out_dir."""
    names = [s.label for s in summaries]
    x_shape = models[0].x_shape
    figures = {}
    if splits.column_names is not None:
        figures.update(_draw_tabular_comparison(models, names, splits, out_dir, seed=seed))
        figures["scatter"] = _draw_scatter(models, names, splits, out_dir, grid_box(n_grid, z_range))
        return figures

    # reconstructions: the same test images, one row per model
    pick = torch.randperm(len(splits.test), generator=torch.Generator().manual_seed(seed))[:12]
    x = splits.inputs("test")[pick]
    y = None if splits.test_labels is None else splits.test_labels[pick]
    rows = image_rows(
        [x] + [reconstructions(m, x, y if is_conditional(m) else None) for m in models],
        x_shape,
        "the same test images reconstructed: decoder mean E[x | z = E_q[z|x]]; row labels give the "
        "test-set squared error per pixel",
        row_labels=["original"]
        + [f"{n}: {s.squared_error_per_pixel:.4f}" for n, s in zip(names, summaries, strict=True)],
        cell_inches=0.72,
        margin_inches=(2.2, 3.2 - 3 * 0.72),
    )
    figures["reconstructions"] = _save(render(rows), out_dir, "reconstructions")

    # latent scatter, with the rectangle the decoded grid covers
    figures["scatter"] = _draw_scatter(models, names, splits, out_dir, grid_box(n_grid, z_range))

    # both decoders on the same grid
    if all(m.latent_dim >= 2 for m in models):
        fig = Figure(figsize=(14.0, 7.6))
        for ax, model, name in zip(fig.subplots(1, 2), models, names, strict=True):
            label = DEFAULT_LABEL if is_conditional(model) else None  # (as its own grid figure)
            grid = latent_grid(model, n_grid, z_range=z_range, label=label)
            draw_latent_grid(ax, grid, f"{name}\n{grid.title}", fontsize=8)
        fig.tight_layout()
        figures["grid"] = _save(fig, out_dir, "grid")

    # both decoders on the same prior samples (same seed, so the same z when Z agrees)
    fig = Figure(figsize=(12.0, 6.4))
    for ax, model, name in zip(fig.subplots(1, 2), models, names, strict=True):
        samples = _prior_samples(model, 64, seed)
        draw_image_grid(ax, replace(samples, title=f"{name}: {samples.title}"), fontsize=8)
    fig.tight_layout(w_pad=4.0)
    figures["samples"] = _save(fig, out_dir, "samples")
    return figures


def _prior_samples(model, n: int, seed: int) -> ImageGrid:
    """The picture of n prior samples (decoder means): for a conditional model sample i decoded
    under label i mod C, each column one class (`class_cycle_decodes`, `cycle_columns`, as its samples
    figure)."""
    if not is_conditional(model):
        return sample_grid(model, n, mode="mean", seed=seed)
    _, _, x = class_cycle_decodes(model, n, seed=seed)
    classes = shown_classes(model)
    names = ", ".join(class_names(model)[c] for c in classes)
    return ImageGrid(
        tile(as_images(x, model.x_shape), ncols=cycle_columns(n, len(classes))),
        f"{n} z ~ p(z), sample i decoded as E[x | z, y] under label i mod {len(classes)}: columns {names}",
    )


def _draw_scatter(models, names: list[str], splits: Splits, out_dir: Path, box) -> str:
    """Both runs' test-set codes side by side, with `box` (the decoded grid's range, or None)."""
    fig = Figure(figsize=(13.5, 5.6))
    for ax, model, name in zip(fig.subplots(1, 2), models, names, strict=True):
        scatter = latent_scatter(
            model, splits.inputs("test"), splits.test_labels, label_names=splits.label_names
        )
        draw_latent_scatter(ax, scatter, f"{name}: {scatter.title}", box=box)
    fig.tight_layout()
    return _save(fig, out_dir, "scatter")


def _draw_tabular_comparison(
    models, names: list[str], splits: Splits, out_dir: Path, *, seed: int
) -> dict[str, str]:
    """A tabular comparison's reconstructions and samples: each run's column figures
    (`vaelab.viz.tabular`) side by side, in the data's units."""
    columns = splits.column_names
    assert columns is not None
    x = pick_rows(splits.test, 500, seed)
    recon = [column_reconstructions(m, splits.transform, x, columns, split="test") for m in models]
    marginals = [
        column_marginals(m, splits.transform, splits.test, columns, seed=seed, split="test") for m in models
    ]
    return {
        "reconstructions": _side_by_side(
            recon, names, draw_column_reconstructions, out_dir, "reconstructions"
        ),
        "samples": _side_by_side(marginals, names, draw_column_marginals, out_dir, "samples"),
    }


def _side_by_side(
    panels: list[Any], names: list[str], draw: Callable[[Any, Any], None], out_dir: Path, name: str
) -> str:
    """`draw` each of the two runs' figure data on one half of a figure, titled by its run."""
    width, height = panel_size(len(panels[0].names))
    fig = Figure(figsize=(2 * width, height + 0.4), layout="constrained")
    halves = fig.subfigures(1, 2, wspace=0.05, squeeze=False)[0]
    for half, panel, label in zip(halves, panels, names, strict=True):
        draw(half, replace(panel, title=f"{label}:\n{panel.title}"))
    return _save(fig, out_dir, name)


def _save(fig, out_dir: Path, name: str) -> str:
    file_name = COMPARE_FIGURES[name].file_name
    save_figure(fig, out_dir / file_name)
    return file_name


# --------------------------------------------------------------------------------------- table


def _nats(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" + (f" ± {stderr:.2f}" if stderr is not None else "")


def comparison_rows(c: Comparison) -> list[tuple[str, str, str, str]]:
    """(quantity, unit, run A, run B) rows of the comparison table."""
    a, b = c.a, c.b

    def probe(s: ModelSummary, field: str) -> str:
        return "—" if s.probe is None else f"{getattr(s.probe, field):.3f}"

    def codes(s: ModelSummary) -> str:
        return ", ".join(
            f"{latent_name(u)} {m:.2f} ± {sd:.2f}"
            for u, (m, sd) in enumerate(list(zip(s.code_mean, s.code_std, strict=True))[:4])
        ) + (", ..." if s.latent_dim > 4 else "")

    def both(fn) -> tuple[str, str]:
        return fn(a), fn(b)

    rows = [
        (
            "model",
            "",
            *both(
                lambda s: (
                    f"{s.kind.upper()}, Z = {s.latent_dim}, {s.parameters:,} parameters"
                    if s.parameters
                    else f"{s.kind.upper()}, Z = {s.latent_dim}"
                )
            ),
        ),
        ("epochs trained (best validation epoch)", "epochs", *both(lambda s: f"{s.epochs} ({s.best_epoch})")),
        ("training time", "seconds", *both(lambda s: f"{s.train_seconds:.1f}")),
        (
            "reconstruction term E_q[log p(x|z)]",
            "nats per example",
            *both(lambda s: _nats(s.log_p_x_given_z)),
        ),
        (
            "squared error of E[x | z = E_q[z|x]]",
            "per column, model-input units²" if c.tabular else "per pixel, intensity²",
            *both(lambda s: f"{s.squared_error_per_pixel:.4f}"),
        ),
        ("KL(q(z|x) || p(z))", "nats per example", *both(lambda s: _nats(s.kl))),
        ("ELBO", "nats per example", *both(lambda s: _nats(s.elbo))),
        (
            "log p(x), importance sampled (± s.e.)",
            "nats per example",
            *both(
                lambda s: _nats(s.log_px, s.log_px_stderr) + (f" (k = {s.log_px_k})" if s.log_px_k else "")
            ),
        ),
        (
            "gap log p(x) - ELBO",
            "nats per example",
            *both(lambda s: _nats(None if s.log_px is None or s.elbo is None else s.log_px - s.elbo)),
        ),
        (
            f"active units ({active_units_rule()})",
            "count",
            *both(lambda s: f"{s.active_units} of {s.latent_dim}"),
        ),
        ("code E_q[z_u|x] over the test set: mean ± s.d.", "prior s.d. units", *both(codes)),
        (
            "probe accuracy, logistic regression on E_q[z|x]",
            "fraction of scored rows",
            *both(lambda s: probe(s, "accuracy")),
        ),
        (
            "chance (most frequent class)",
            "fraction of scored rows",
            *both(lambda s: probe(s, "chance_accuracy")),
        ),
    ]
    return rows


def format_comparison(c: Comparison) -> str:
    """compare.md: the table, then what a dash means and how the probe was run."""
    lines = [
        f"# {c.a.label} vs {c.b.label}",
        "",
        f"Data: {c.data}, {c.split} split ({c.num_examples} examples).",
        "",
        f"| quantity | unit | {c.a.label} | {c.b.label} |",
        "|---|---|---|---|",
    ]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in comparison_rows(c)
    ]
    lines.append("")
    for s in (c.a, c.b):
        if s.no_elbo_reason:
            lines.append(f"- {s.label}: {s.no_elbo_reason}.")
        if s.given:
            lines.append(
                f"- {s.label}: conditional on {s.given}; not comparable with an unconditional "
                "model's log p(x)."
            )
    probe = c.a.probe or c.b.probe
    lines.append(
        f"- Probe: {probe.protocol}; codes standardized, multinomial logistic regression (scikit-learn)."
        if probe
        else f"- Probe: none ({NO_PROBE_LABELS})."
    )
    if c.differences:
        lines.append(f"- The runs differ in more than the model kind: {'; '.join(c.differences)}.")
    else:
        lines.append("- Same networks, data and training budget; only model.kind differs.")
    return "\n".join(lines) + "\n"
