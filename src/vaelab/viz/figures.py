"""The figure registry: every figure of a run, defined once, without drawing anything.

Each figure kind (`FIGURE_KINDS`, filled by `@figure_kind`) names the function that computes its
data from a `Run` and `FigureOptions`, the options it reads, its default size `n`, whether it
applies to a run (and why not), and the kind of data it shows (`data`: images, tabular or any;
`plot --kind all` and the report draw those of the run's kind, `figures_for`). `ALL_FIGURES`
lists the files `plot_all` writes into RUN/figures, each with its caption (the report's).
`figure_file_name` / `figure_path` give a figure's file: the registered name for the options
`ALL_FIGURES` draws it with, a name that spells out any other options
(`grid-range_-3_3_-3_3.png`), so that a figure made with other options never replaces, nor is
captioned as, the default one. This module imports no plotting library, so a command line can
take its choices from it cheaply; `vaelab.viz.plot` draws.

A run conditional on a label (model.condition label) gets every figure that makes sense for it,
through `vaelab.viz.conditional` (codes E_q[z|x, y] at each image's own label, decodes under a
label): the kinds that decode under one label read `label` (`LABEL_KINDS`), and `figure_label`
picks it where none is given. A figure decoded under one label has `-labelC` in its file name
(grid-label0.png), and every caption of a conditional run says what it is conditional on
(`FigureFile.caption_for`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.diagnostics import latent_name
from vaelab.errors import UserError
from vaelab.viz.conditional import (
    NOT_CONDITIONAL,
    check_label,
    class_cycle,
    class_samples,
    conditional_config,
    is_conditional,
    label_swap,
    pick_one_per_class,
)
from vaelab.viz.curves import elbo_chart, training_curves
from vaelab.viz.images import reconstruction_rows, sample_grid
from vaelab.viz.latent import (
    class_name,
    interpolations,
    latent_grid,
    latent_scatter,
    latent_traversals,
    pick_pairs,
    top_dims,
)
from vaelab.viz.layers import layer_kls
from vaelab.viz.run import SPLITS, Run
from vaelab.viz.tabular import column_marginals, column_pairs, column_reconstructions, pick_rows

FIGURES_DIR = "figures"

WIDE_RANGE = (-10.0, 5.0, -5.0, 5.0)
"""z1 in [-10, 5], z2 in [-5, 5]: the latent range of the decoded grid in the VAE lecture notes this
project follows (a wider window than the quantile grid, where an AE's codes may lie)."""

MODES = ("mean", "sample")
METHODS = ("linear", "spherical")


@dataclass(frozen=True)
class FigureOptions:
    """What a figure shows, beyond the run. Each kind reads only some fields (`FigureKind.reads`).

    split: rows the figure draws from; seed: of its random choices (images, samples); n: images
    (reconstructions, samples), grid points per axis (grid), path points (interpolation) or steps
    (traversals), None for each kind's default; z_range: (z1min, z1max, z2min, z2max) of a grid,
    None for the prior's quantiles; dims: the two latent dims a grid varies, numbered from 1 as
    they are named (1 is z1, `latent_name`), None for the two most used; base: row of `split`
    whose posterior mean holds the dims a grid or traversal does not vary, None for the prior
    mean 0; mode: samples as decoder means or draws; method: interpolation path; label: the class
    code a conditional model's figures decode under (samples, grid, interpolation, traversals:
    `LABEL_KINDS`), None for each kind's default (`figure_label`) and for a model without labels.
    """

    split: str = "test"
    seed: int = 0
    n: int | None = None
    z_range: tuple[float, float, float, float] | None = None
    dims: tuple[int, int] | None = None
    base: int | None = None
    mode: str = "mean"
    method: str = "linear"
    label: int | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise UserError(f"split {self.split!r} is not one of {', '.join(SPLITS)}")
        if self.n is not None and self.n < 1:
            raise UserError(f"n must be >= 1 (or None for each figure's default), got {self.n}")
        if self.z_range is not None and len(self.z_range) != 4:
            raise UserError(f"z_range must be (z1min, z1max, z2min, z2max), got {self.z_range}")
        if self.dims is not None and (len(self.dims) != 2 or min(self.dims) < 1):
            raise UserError(f"dims must be two latent dims numbered from 1 (z1 is 1), got {self.dims}")
        if self.base is not None and self.base < 0:
            raise UserError(f"base must be a row index >= 0, got {self.base}")
        if self.mode not in MODES:
            raise UserError(f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.method not in METHODS:
            raise UserError(f"method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.label is not None and self.label < 0:
            raise UserError(f"label must be a class code >= 0, got {self.label}")


DEFAULT_OPTIONS = FigureOptions()

LABEL_KINDS = ("samples", "grid", "interpolation", "traversals")
"""The figure kinds a conditional model decodes under a label the options may name (`label`)."""

ONE_LABEL_KINDS = ("grid", "traversals")
"""Kinds that decode everything under one label, so a conditional run needs one (`figure_label`)."""

DEFAULT_LABEL = 0
"""The label a conditional run's grid and traversals decode under when neither `label` nor `base`
names one: the first class. (One picture per class would repeat, at a tenth of the size, what the
class-samples figure shows: the same z under every class; a style manifold is read within one.)"""


def figure_label(
    config: RunConfig, kind: str, options: FigureOptions, labels: Tensor | None = None
) -> int | None:
    """The label figure `kind` of a run decodes under: options.label where given; for a conditional
    run's grid and traversals (`ONE_LABEL_KINDS`) without one, the own label of the `base` image
    (labels: (N,) of the options' split; None: not known yet, so None) or else `DEFAULT_LABEL`;
    otherwise None: samples then cycle through the classes, an interpolation decodes each pair
    under its own label, and a model without labels decodes without one."""
    if options.label is not None or kind not in ONE_LABEL_KINDS or not conditional_config(config):
        return options.label
    if options.base is None:
        return DEFAULT_LABEL
    if labels is None or not 0 <= options.base < len(labels):
        return None
    return int(labels[options.base])


def with_figure_label(
    config: RunConfig, kind: str, options: FigureOptions, labels: Tensor | None = None
) -> FigureOptions:
    """`options` with the label `figure_label` picks, so a file name says it (`figure_file_name`)."""
    return dataclasses.replace(options, label=figure_label(config, kind, options, labels))


def _always(run_dir: Path, config: RunConfig) -> str | None:
    return None


@dataclass(frozen=True)
class FigureKind:
    """One kind of figure: `make(run, options)` returns its data (drawn by `vaelab.viz.draw.render`).

    reads: the FigureOptions fields the figure depends on (others do not change it); default_n:
    the n used when options.n is None; applies(run_dir, config): None, or why the figure does not
    apply to that run (checked without loading the model); help: one line for a command's help;
    data: the runs it is for, by their data's kind (`data_kind`): "images", "tabular" or "any".
    """

    name: str
    make: Callable[[Run, FigureOptions], Any]
    reads: tuple[str, ...]
    help: str
    default_n: int | None = None
    applies: Callable[[Path, RunConfig], str | None] = _always
    data: str = "any"

    def n(self, options: FigureOptions) -> int:
        """options.n, else this kind's default (every kind that reads n has one)."""
        if options.n is not None:
            return options.n
        if self.default_n is None:
            raise TypeError(f"figure kind {self.name!r} reads no n")
        return self.default_n


FIGURE_KINDS: dict[str, FigureKind] = {}


def figure_kind(
    name: str,
    *,
    reads: tuple[str, ...],
    help: str,
    default_n: int | None = None,
    applies=None,
    data: str = "any",
):
    """Register the decorated `make(run, options)` as the figure kind `name`."""

    def register(make):
        FIGURE_KINDS[name] = FigureKind(name, make, reads, help, default_n, applies or _always, data)
        return make

    return register


def data_kind(run_dir: Path) -> str:
    """ "tabular" for a run on rows of named columns (run.json's `columns`), else "images"."""
    return "tabular" if runs.read_run_info(run_dir).columns is not None else "images"


def wrong_data(run_dir: Path, kind: str) -> str | None:
    """Why figure `kind` is not for the run's kind of data (an image grid of a table), or None."""
    shows, has = FIGURE_KINDS[kind].data, data_kind(run_dir)
    if shows in ("any", has):
        return None
    others = ", ".join(k for k, f in FIGURE_KINDS.items() if f.data in ("any", has))
    return f"figure kind {kind!r} shows {shows}; {run_dir} is a run on {has} data (its figures: {others})"


@figure_kind(
    "reconstructions",
    reads=("split", "seed", "n"),
    help="random images over their reconstructions E[x | z = E_q[z|x]]",
    default_n=32,
    data="images",
)
def _reconstructions(run: Run, options: FigureOptions):
    rows = run.random_rows(FIGURE_KINDS["reconstructions"].n(options), options.seed)
    labels = None if run.labels is None else run.labels[rows]  # (a conditional model's y)
    return reconstruction_rows(run.model, run.x[rows], min(8, len(rows)), labels)


def _label(run: Run, kind: str, options: FigureOptions) -> int | None:
    """The label figure `kind` decodes under (`figure_label`), checked against the model."""
    label = figure_label(run.config, kind, options, run.labels)
    return label if label is None else check_label(run.model, label, "figure option label")


@figure_kind(
    "samples",
    reads=("seed", "n", "mode", "label"),
    help="prior samples z ~ p(z) decoded (an AE: codes z ~ N(0, I) decoded; a conditional run: under "
    "--label, else under each label in turn)",
    default_n=64,
    data="images",
)
def _samples(run: Run, options: FigureOptions):
    n = FIGURE_KINDS["samples"].n(options)
    label = _label(run, "samples", options)
    if label is None and is_conditional(run.model):
        return class_cycle(run.model, n, mode=options.mode, seed=options.seed)
    return sample_grid(run.model, n, mode=options.mode, seed=options.seed, label=label)


@figure_kind(
    "scatter",
    reads=("split",),
    help="posterior means E_q[z|x] of a split (a conditional run: E_q[z|x, y] at each own label), "
    "coloured by label",
)
def _scatter(run: Run, options: FigureOptions):
    return latent_scatter(run.model, run.x, run.labels, split=run.split, label_names=run.label_names)


@figure_kind(
    "grid",
    reads=("split", "n", "z_range", "dims", "base", "label"),
    help="decoder means on a grid of latent points (Kingma & Welling 2014, Figure 4); a conditional "
    "run: under one label",
    default_n=21,
    data="images",
)
def _grid(run: Run, options: FigureOptions):
    base, where = run.base_code(options.base)
    if options.dims is not None:
        dims = (options.dims[0] - 1, options.dims[1] - 1)  # z1 is index 0
    else:
        d1, d2 = (0, 1) if run.model.latent_dim <= 2 else top_dims(run.stats, 2)
        dims = (d1, d2)
    n = FIGURE_KINDS["grid"].n(options)
    label = _label(run, "grid", options)
    return latent_grid(
        run.model, n, z_range=options.z_range, dims=dims, base=base, base_description=where, label=label
    )


@figure_kind(
    "interpolation",
    reads=("split", "seed", "n", "method", "label"),
    help="decoded paths between the posterior means of pairs of images (a conditional run: pairs of "
    "one label, decoded under it)",
    default_n=10,
    data="images",
)
def _interpolation(run: Run, options: FigureOptions):
    """Pairs of different labels, or for a conditional model pairs of the same label (of `label`
    where given), each path decoded under its pair's label (`vaelab.viz.latent.interpolations`)."""
    conditional = is_conditional(run.model)
    label = _label(run, "interpolation", options)
    pairs = pick_pairs(run.labels, len(run.x), 4, options.seed, same_label=conditional, label=label)
    if not pairs:
        which = "of one label" if conditional else "of different labels"
        if label is not None:
            which = f"of label {label}"
        raise UserError(f"interpolation needs two {run.split} images {which}")
    a, b = zip(*pairs, strict=True)
    n = FIGURE_KINDS["interpolation"].n(options)
    return interpolations(
        run.model,
        run.x[list(a)],
        run.x[list(b)],
        n,
        method=options.method,
        indices=tuple(pairs),
        split=run.split,
        classes=[]
        if run.labels is None
        else [
            (class_name(int(run.labels[i]), run.label_names), class_name(int(run.labels[j]), run.label_names))
            for i, j in pairs
        ],
        labels=run.labels[list(a)] if conditional and run.labels is not None else None,
    )


@figure_kind(
    "traversals",
    reads=("split", "n", "base", "label"),
    help="one latent dim at a time swept over +-3 prior s.d., decoded (a conditional run: under one label)",
    default_n=9,
    data="images",
)
def _traversals(run: Run, options: FigureOptions):
    base, where = run.base_code(options.base)
    steps = FIGURE_KINDS["traversals"].n(options)
    return latent_traversals(
        run.model,
        run.x,
        steps=steps,
        base=base,
        base_description=where,
        stats=run.stats,
        split=run.split,
        label=_label(run, "traversals", options),
    )


@figure_kind("curves", reads=(), help="training curves per epoch")
def _curves(run: Run, options: FigureOptions):
    what = "AE" if run.deterministic else "VAE"
    title = (
        f"training curves of run {run.dir.name} ({what}, Z = {run.model.latent_dim}, "
        f"{run.config.data.source}); dotted line: best validation epoch"
    )
    return training_curves(run.metrics, title=title)


@figure_kind(
    "marginals",
    reads=("split", "seed", "n"),
    help="tabular data: each column's histogram, data against rows sampled from the model",
    default_n=2000,
    data="tabular",
)
def _marginals(run: Run, options: FigureOptions):
    n = FIGURE_KINDS["marginals"].n(options)
    x = run.splits.split(run.split)
    return column_marginals(
        run.model, run.splits.transform, x, run.column_names, n=n, seed=options.seed, split=run.split
    )


@figure_kind(
    "pairs",
    reads=("split", "seed", "n"),
    help="tabular data: pairwise scatter of the first columns, data against model samples",
    default_n=2000,
    data="tabular",
)
def _pairs(run: Run, options: FigureOptions):
    n = FIGURE_KINDS["pairs"].n(options)
    x = run.splits.split(run.split)
    return column_pairs(
        run.model, run.splits.transform, x, run.column_names, n=n, seed=options.seed, split=run.split
    )


@figure_kind(
    "column-reconstructions",
    reads=("split", "seed", "n"),
    help="tabular data: each column of random rows against its reconstruction E[x | z = E_q[z|x]]",
    default_n=500,
    data="tabular",
)
def _column_reconstructions(run: Run, options: FigureOptions):
    n = FIGURE_KINDS["column-reconstructions"].n(options)
    x = pick_rows(run.splits.split(run.split), n, options.seed)
    return column_reconstructions(run.model, run.splits.transform, x, run.column_names, split=run.split)


def _conditional_applies(run_dir: Path, config: RunConfig) -> str | None:
    return None if conditional_config(config) else NOT_CONDITIONAL


CONDITIONAL_KINDS = ("label-swap", "class-samples")
"""The figures of a model conditional on a label (`vaelab.viz.conditional`): the report gives them
their own section."""


@figure_kind(
    "label-swap",
    reads=("split", "seed", "n"),
    help="conditional runs: an image's z = E_q[z|x,y] decoded under every label (style kept, class swapped)",
    default_n=10,
    applies=_conditional_applies,
    data="images",
)
def _label_swap(run: Run, options: FigureOptions):
    if run.labels is None:
        raise UserError(f"label swap: the {run.split} split has no labels to encode its images with")
    rows = pick_one_per_class(run.labels, FIGURE_KINDS["label-swap"].n(options), options.seed)
    return label_swap(run.model, run.x[rows], run.labels[rows], indices=rows.tolist(), split=run.split)


@figure_kind(
    "class-samples",
    reads=("seed", "n", "mode"),
    help="conditional runs: the same prior samples z ~ p(z) decoded under each label, one row per class",
    default_n=10,
    applies=_conditional_applies,
    data="images",
)
def _class_samples(run: Run, options: FigureOptions):
    n = FIGURE_KINDS["class-samples"].n(options)
    return class_samples(run.model, n, mode=options.mode, seed=options.seed)


NO_ELBO = "an autoencoder has no ELBO to decompose (its point-mass code has an infinite KL to any density)"


def _decomposition_applies(run_dir: Path, config: RunConfig) -> str | None:
    if config.model.kind == "ae":
        return NO_ELBO
    path = Path(run_dir) / "eval.json"
    if not path.is_file():
        return f"{path}: not found; evaluate the run first (vaelab evaluate)"
    if runs.read_evaluation(path).get("elbo") is None:
        return f"{path}: holds no ELBO to decompose"
    return None


@figure_kind(
    "decomposition",
    reads=(),
    help="the ELBO's terms on the test split (eval.json) and the KL of each latent dim",
    applies=_decomposition_applies,
)
def _decomposition(run: Run, options: FigureOptions):
    evaluation = run.evaluation()
    chart = None if evaluation is None else elbo_chart(evaluation, run.stats)
    if chart is None:
        raise UserError(_decomposition_applies(run.dir, run.config) or NO_ELBO)
    return chart


def _layers_applies(run_dir: Path, config: RunConfig) -> str | None:
    if config.model.layers < 2:
        return "it shows the stochastic layers of a hierarchical model (model.layers 2 or more)"
    return None


@figure_kind(
    "layers",
    reads=(),
    help="a hierarchical model's KL per stochastic layer over training and on the test split",
    applies=_layers_applies,
)
def _layers(run: Run, options: FigureOptions):
    title = f"KL per stochastic layer of run {run.dir.name} ({run.config.model.layers} layers)"
    return layer_kls(run.metrics, run.evaluation(), run.config.model.latent_dim, title=title)


# ------------------------------------------------------------------------------- all figures


@dataclass(frozen=True)
class FigureFile:
    """One file of `plot_all`: figure `kind` drawn with the default options changed by `changes`.

    caption: what the report says under it; caption_ae: the caption for an autoencoder where it
    must differ (an AE has no prior, KL or ELBO), else None; caption_conditional: the caption for a
    model conditional on a label (what it encodes and decodes given), else None.
    """

    file_name: str
    kind: str
    caption: str
    changes: dict[str, Any] = field(default_factory=dict)
    caption_ae: str | None = None
    caption_conditional: str | None = None

    @property
    def options(self) -> FigureOptions:
        return dataclasses.replace(DEFAULT_OPTIONS, **self.changes)

    def caption_for(self, deterministic: bool, conditional: bool = False) -> str:
        if conditional and self.caption_conditional:
            return self.caption_conditional
        return self.caption_ae if deterministic and self.caption_ae else self.caption


ALL_FIGURES: tuple[FigureFile, ...] = (
    FigureFile(
        "curves.png",
        "curves",
        "Training curves: train (running mean over each epoch) and validation ELBO, reconstruction term "
        "and KL per epoch, nats per example. The run keeps the weights of the best validation epoch "
        "(dotted).",
        caption_ae="Training curves: train (running mean over each epoch) and validation reconstruction "
        "term log p(x | z = f(x)) per epoch, nats per example (an AE has no KL and no ELBO). The run keeps "
        "the weights of the best validation epoch (dotted).",
        caption_conditional="Training curves, each image given its label y: train (running mean over "
        "each epoch) and validation ELBO of log p(x|y), reconstruction term E_q[log p(x|z, y)] and "
        "KL(q(z|x, y) || p(z)) per epoch, nats per example. The run keeps the weights of the best "
        "validation epoch (dotted).",
    ),
    FigureFile(
        "reconstructions.png",
        "reconstructions",
        "Reconstructions: random test images (odd rows) over the decoder mean E[x | z = E_q[z|x]] at "
        "their posterior mean (even rows). These are means, not samples.",
        caption_conditional="Reconstructions given the label: random test images (odd rows) over the "
        "decoder mean E[x | z = E_q[z|x, y], y] (even rows), each image encoded and decoded under its "
        "own label y. These are means, not samples.",
    ),
    FigureFile(
        "samples.png",
        "samples",
        "Prior samples: z ~ p(z) decoded, each shown as the decoder mean E[x|z].",
        {"mode": "mean"},
        caption_ae="Decoded codes: z ~ N(0, I) through the AE's decoder, each shown as the decoder mean "
        "E[x|z]. An AE has no prior, so these are not samples of the model: they show what its decoder "
        "makes of the region a VAE's prior covers.",
        caption_conditional="Prior samples by class: independent z ~ p(z), sample i decoded under the "
        "i-th label in turn, so column y holds class y, each shown as the decoder mean E[x | z, y]. "
        "One class alone: vaelab plot RUN --kind samples --label L (or vaelab sample RUN --label L).",
    ),
    FigureFile(
        "samples-draw.png",
        "samples",
        "Prior samples: the same z ~ p(z), each shown as one draw x ~ p(x|z) (for a Bernoulli decoder, "
        "independent pixel coin flips around the mean above).",
        {"mode": "sample"},
        caption_ae="The same decoded codes z ~ N(0, I), each shown as one draw x ~ p(x|z) (an AE has no "
        "prior, so these are not samples of the model).",
        caption_conditional="The same z ~ p(z) under the same labels (column y: class y), each shown as "
        "one draw x ~ p(x | z, y) (for a Bernoulli decoder, independent pixel coin flips around the mean "
        "above).",
    ),
    FigureFile(
        "scatter.png",
        "scatter",
        "Latent scatter: test-set posterior means E_q[z|x] coloured by label (PCA to 2-D when the latent "
        "has more than two dims; the axis labels say so).",
        caption_conditional="Latent scatter given the label: test-set posterior means E_q[z | x, y], each "
        "image encoded at its own label y, coloured by label (PCA to 2-D when the latent has more than two "
        "dims; the axis labels say so). The decoder is told y, so z need not carry the class: classes "
        "that mix here are what a conditional model is for (z holds the style, y the class), not a "
        "failure to learn them.",
    ),
    FigureFile(
        "grid.png",
        "grid",
        "Latent manifold: decoder means on a grid of latent points (Kingma & Welling 2014, Figure 4), "
        "at Gaussian quantiles of the prior, so each cell stands for equal prior mass.",
        caption_conditional="Latent manifold of one class: decoder means E[x | z, y] on a grid of latent "
        "points at Gaussian quantiles of the prior, every cell decoded under the one label y the title "
        f"names: one class's styles (Kingma et al. 2014, Figure 1a). By default the first class (label "
        f"{DEFAULT_LABEL}); vaelab plot RUN --kind grid --label L draws another.",
    ),
    FigureFile(
        "grid-wide.png",
        "grid",
        "The same decoder over the wider range z1 in [-10, 5], z2 in [-5, 5] of the VAE lecture notes "
        "this project follows: a VAE's codes stay near the prior's bulk, so its outer cells repeat the "
        "edge digits; an AE's codes may spread this far.",
        {"z_range": WIDE_RANGE},
        caption_conditional="The same label's decoder E[x | z, y] over the wider range z1 in [-10, 5], "
        "z2 in [-5, 5] of the VAE lecture notes this project follows: codes stay near the prior's bulk, "
        "so the outer cells repeat the edge styles.",
    ),
    FigureFile(
        "interpolation.png",
        "interpolation",
        "Linear interpolation between the posterior means of pairs of test images, decoded.",
        {"method": "linear"},
        caption_conditional="Linear interpolation within one class: pairs of test images of the same "
        "label y, both encoded at y, z = E_q[z | x, y], and the path between them decoded under y, "
        "E[x | z(t), y]: the style moves, the class stays. (Between classes the decoder's label would "
        "have to jump along the path.) --label L takes the pairs from class L.",
    ),
    FigureFile(
        "interpolation-spherical.png",
        "interpolation",
        "Spherical interpolation (slerp) between the same pairs, decoded.",
        {"method": "spherical"},
        caption_conditional="Spherical interpolation (slerp) between the same pairs of one label, decoded "
        "under that label.",
    ),
    FigureFile(
        "traversals.png",
        "traversals",
        "Latent traversals: one latent dim at a time swept over ±3 prior s.d., the others at the prior "
        "mean; rows sorted by the dim's mean KL (an AE: by the variance of its code).",
        caption_conditional="Latent traversals under one label: one latent dim at a time swept over ±3 "
        "prior s.d., the others at the prior mean, decoded as E[x | z, y] under the label y the title "
        "names; rows sorted by the dim's mean KL(q(z_u | x, y) || p(z_u)). By default the first class "
        f"(label {DEFAULT_LABEL}), or with --base I image I's own label; --label L for another.",
    ),
    FigureFile(
        "marginals.png",
        "marginals",
        "Each column's distribution: test rows (filled) against rows sampled from the model (z ~ p(z), "
        "x ~ p(x|z); outline), in the data's own units (the standardization undone).",
        caption_ae="Each column's distribution: test rows (filled) against codes z ~ N(0, I) decoded and "
        "drawn x ~ p(x|z) (outline); an AE has no prior, so these are not samples of the model.",
    ),
    FigureFile(
        "pairs.png",
        "pairs",
        "Pairs of columns: test rows against rows sampled from the model, in the data's units; a model "
        "that learned the columns' dependence covers the same shapes.",
    ),
    FigureFile(
        "column-reconstructions.png",
        "column-reconstructions",
        "Reconstructions, column by column: each test row's value against E[x | z = E_q[z|x]] (dotted: "
        "perfect reconstruction).",
    ),
    FigureFile(
        "label-swap.png",
        "label-swap",
        "Label swap: test images (first column) encoded under their own label, z = E_q[z | x, y], and "
        "that same z decoded under every label as E[x | z, y]. The decoder is told the class, so z is "
        "free to hold the rest (slant, stroke width): along a row the style stays and the class changes.",
    ),
    FigureFile(
        "class-samples.png",
        "class-samples",
        "Class-conditional samples: the same prior samples z ~ p(z) in every column, each row decoded "
        "under its label y as the decoder mean E[x | z, y].",
        {"mode": "mean"},
    ),
    FigureFile(
        "layers.png",
        "layers",
        "KL per stochastic layer (z_1 next to x): each layer's Monte Carlo KL per epoch, train and "
        "validation, and on the test split with its active units (after evaluation). A layer whose KL "
        "stays near 0 has collapsed to its prior.",
    ),
    FigureFile(
        "decomposition.png",
        "decomposition",
        "ELBO decomposition on the test split, nats per example, and the KL of each latent dim. The gap "
        "log p(x) − ELBO estimates E_x KL(q(z|x) || p(z|x)).",
        caption_conditional="ELBO decomposition of log p(x|y) on the test split, each image given its "
        "true label y, nats per example, and the KL(q(z|x, y) || p(z)) of each latent dim. The gap "
        "log p(x|y) − ELBO estimates E KL(q(z|x, y) || p(z|x, y)).",
    ),
)


def _relevant(kind: str, options: FigureOptions) -> dict[str, Any]:
    """The options figure `kind` reads, but the label (`figure_file_name` adds it at the end)."""
    return {name: getattr(options, name) for name in FIGURE_KINDS[kind].reads if name != "label"}


def _suffix(name: str, value: Any) -> str:
    if name == "z_range":
        return "range_" + "_".join(f"{v:g}" for v in value)
    if name == "dims":
        return "-".join(latent_name(d - 1) for d in value)
    if name == "mode":
        return "draw" if value == "sample" else value
    if name in ("method", "split"):
        return value
    return f"{name}{value}"  # n12, seed3, base7


def figure_file_name(kind: str, options: FigureOptions = DEFAULT_OPTIONS) -> str:
    """The file name of figure `kind` drawn with `options`.

    The name `ALL_FIGURES` registers for these options (e.g. grid-wide.png for the wide range), else
    the kind followed by every option it reads that differs from the default (grid-n11.png,
    scatter-valid.png), so a figure's file name always says how it was made; a figure decoded
    under one label of a conditional model ends in its code (grid-label3.png, samples-label7.png).
    """
    if kind not in FIGURE_KINDS:
        raise UserError(f"figure kind {kind!r} is not one of {', '.join(FIGURE_KINDS)}")
    relevant = _relevant(kind, options)
    label = (
        f"-label{options.label}" if options.label is not None and "label" in FIGURE_KINDS[kind].reads else ""
    )
    for entry in ALL_FIGURES:
        if entry.kind == kind and _relevant(kind, entry.options) == relevant:
            return entry.file_name.removesuffix(".png") + label + ".png"
    default = _relevant(kind, DEFAULT_OPTIONS)
    parts = [_suffix(name, value) for name, value in relevant.items() if value != default[name]]
    return "-".join([kind, *parts]) + label + ".png"


def figure_path(run_dir: str | Path, kind: str, options: FigureOptions = DEFAULT_OPTIONS) -> Path:
    """Where figure `kind` of a run goes by default: RUN/figures/<figure_file_name(kind, options)>."""
    return Path(run_dir) / FIGURES_DIR / figure_file_name(kind, options)


def not_applicable(run_dir: str | Path, kind: str) -> str | None:
    """Why figure `kind` does not apply to the run (an AE has no ELBO, an image grid of a table,
    ...), or None if it does."""
    run_dir = runs.check_run_dir(run_dir)
    return wrong_data(run_dir, kind) or FIGURE_KINDS[kind].applies(run_dir, runs.read_config(run_dir))


FAMILY_KINDS = (*CONDITIONAL_KINDS, "layers")
"""Figures of one model family (conditional, hierarchical): listed only for runs of it, where the
others are listed for every run of their kind of data and say why where they do not apply."""


def figures_for(run_dir: Path) -> tuple[FigureFile, ...]:
    """The entries of `ALL_FIGURES` for the run's kind of data (`data_kind`), and those of a
    model family (`FAMILY_KINDS`) only for a run of that family."""
    config = runs.read_config(run_dir)
    return tuple(
        entry
        for entry in ALL_FIGURES
        if wrong_data(run_dir, entry.kind) is None
        and (entry.kind not in FAMILY_KINDS or FIGURE_KINDS[entry.kind].applies(run_dir, config) is None)
    )
