"""Every standard figure of a model conditional on a label: scatter, grid, samples, interpolation,
traversals and the ELBO decomposition, drawn through `vaelab.viz.conditional` (codes E_q[z|x, y]
at each image's own label, decodes under a label), named and captioned as conditional, in `vaelab
plot` and the report.

The model tests use a tiny untrained conditional VAE on 8x8 images (its label changes its decodes
from the start); the run tests use conftest's `conditional_run` (8x8 digits, one epoch, evaluated).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab import runs
from vaelab.cli import main
from vaelab.config import ModelConfig, RunConfig
from vaelab.diagnostics import latent_statistics, posterior_means
from vaelab.errors import UserError
from vaelab.experiments import report
from vaelab.models import build_model
from vaelab.viz.conditional import (
    class_cycle,
    class_cycle_decodes,
    conditional_posterior_means,
    cycle_columns,
    decoder,
    encode,
)
from vaelab.viz.curves import elbo_chart
from vaelab.viz.figures import (
    ALL_FIGURES,
    DEFAULT_LABEL,
    FIGURE_KINDS,
    WIDE_RANGE,
    FigureOptions,
    figure_file_name,
    figure_label,
    figures_for,
)
from vaelab.viz.latent import interpolations, latent_grid, latent_scatter, latent_traversals, pick_pairs
from vaelab.viz.run import Run

CLASSES = ("zero", "one", "two")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = ModelConfig(latent_dim=3, hidden=(16,), condition="label", classes=CLASSES)
    return build_model(config, (1, 8, 8)).eval()


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((6, 1, 8, 8), 0.3), generator=generator)
    return x, torch.tensor([0, 1, 2, 1, 0, 2])


def under(model, label: int, z: torch.Tensor) -> torch.Tensor:
    """E[x | z, y = label] straight from model.given: z (B, Z) -> (B, *x_shape)."""
    with torch.no_grad():
        return model.given(torch.full((len(z),), label)).likelihood(z).mean


# ------------------------------------------------------------------------ encode and decode


def test_codes_are_the_posterior_means_at_each_own_label(model, batch, tiny_model):
    x, y = batch
    torch.testing.assert_close(encode(model, x, y), conditional_posterior_means(model, x, y), rtol=0, atol=0)
    plain = tiny_model()
    torch.testing.assert_close(encode(plain, x), posterior_means(plain, x), rtol=0, atol=0)
    with pytest.raises(UserError, match="encodes each image at its own label: these images have none"):
        encode(model, x)


def test_the_decoder_under_one_label_broadcasts_it_over_any_shape_of_z(model, tiny_model):
    z = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(2))  # (S, B, Z)
    with torch.no_grad():
        x_mean = decoder(model, 2).likelihood(z).mean  # (2, 4, 1, 8, 8)
    torch.testing.assert_close(x_mean.reshape(8, 1, 8, 8), under(model, 2, z.reshape(8, 3)))
    plain = tiny_model()
    assert decoder(plain, None) is plain
    with pytest.raises(UserError, match="conditional on a label; give one of 0..2"):
        decoder(model, None)
    with pytest.raises(UserError, match=r"3 is not a label of this run \(0\.\.2\)"):
        decoder(model, 3)
    with pytest.raises(UserError, match="not conditional on a label; send none"):
        decoder(plain, 0)


# ------------------------------------------------------------------------- the figures' data


def test_scatter_shows_the_conditional_codes_coloured_by_label(model, batch):
    x, y = batch
    scatter = latent_scatter(model, x, y)
    codes = conditional_posterior_means(model, x, y).double().numpy()
    centred = codes - codes.mean(0)  # Z = 3: the points are the codes' first two principal components
    components = np.linalg.svd(centred, full_matrices=False)[2][:2]
    np.testing.assert_allclose(np.abs(scatter.points), np.abs(centred @ components.T), atol=1e-8)
    assert scatter.labels.tolist() == y.tolist() and "E_q[z|x, y], each at its own label y" in scatter.title
    assert "E_q[z|x, y]" in scatter.axis_labels[0] or scatter.projection == "pca"


def test_the_grid_decodes_every_point_under_the_requested_label(model):
    grid = latent_grid(model, 3, label=2)
    z = grid.z.reshape(9, 3)
    torch.testing.assert_close(grid.x_mean, under(model, 2, z), rtol=0, atol=1e-6)
    assert (grid.x_mean - under(model, 0, z)).abs().max() > 1e-4  # the label is not ignored
    assert "E[x|z, y = two]" in grid.title
    with pytest.raises(UserError, match="conditional on a label; give one of 0..2"):
        latent_grid(model, 3)


def test_traversals_decode_under_the_requested_label(model, batch):
    x, y = batch
    stats = latent_statistics(model.given(y), x, batch_size=len(x))  # of q(z|x, y), as Run.stats
    traversals = latent_traversals(model, x, steps=4, stats=stats, label=1)
    rows, steps = len(traversals.dims), 4
    flat = traversals.z.reshape(rows * steps, 3)
    expected = under(model, 1, flat).reshape(rows, steps, 1, 8, 8)
    torch.testing.assert_close(traversals.x_mean, expected, rtol=0, atol=1e-6)
    assert "E[x|z, y = one]" in traversals.rows.title


def test_interpolation_paths_stay_in_their_pairs_class(model, batch):
    x, y = batch
    pairs = pick_pairs(y, len(y), 3, seed=0, same_label=True)
    assert len(pairs) == 3 and all(int(y[i]) == int(y[j]) for i, j in pairs)
    a, b = (list(side) for side in zip(*pairs, strict=True))
    result = interpolations(model, x[a], x[b], 5, indices=tuple(pairs), labels=y[a])
    torch.testing.assert_close(result.z[:, 0], conditional_posterior_means(model, x[a], y[a]))
    torch.testing.assert_close(result.z[:, -1], conditional_posterior_means(model, x[b], y[a]))
    for p, label in enumerate(y[a].tolist()):  # each path decoded under its own pair's label
        torch.testing.assert_close(result.x_mean[p], under(model, label, result.z[p]), rtol=0, atol=1e-6)
    assert "under the pair's own label y" in result.rows.title
    only_two = pick_pairs(y, len(y), 3, seed=0, same_label=True, label=2)
    assert only_two and all(int(y[i]) == int(y[j]) == 2 for i, j in only_two)
    mixed = pick_pairs(y, len(y), 3, seed=0)  # a model without labels: pairs of different labels
    assert all(int(y[i]) != int(y[j]) for i, j in mixed)


def test_samples_without_a_label_cycle_through_the_classes(model):
    z, y, x = class_cycle_decodes(model, 7, seed=3)
    assert y.tolist() == [0, 1, 2, 0, 1, 2, 0]
    for label in range(3):
        rows = y == label
        torch.testing.assert_close(x[rows], under(model, label, z[rows]), rtol=0, atol=1e-6)
    picture = class_cycle(model, 7, seed=3)
    assert (picture.num_rows, picture.num_columns) == (3, 3) and picture.column_labels == CLASSES
    assert "column y holds class y" in picture.title


def test_the_decomposition_of_a_conditional_evaluation_names_log_p_x_given_y():
    evaluation = {"elbo": -10.0, "log_p_x_given_z": -9.0, "kl": 1.0, "log_px": -9.5, "k": 5}
    plain = [name for name, _ in elbo_chart(evaluation).terms]
    given = [name for name, _ in elbo_chart({**evaluation, "given": "the true label y"}).terms]
    assert plain[:3] == ["E_q[log p(x|z)]", "-KL(q(z|x) || p(z))", "ELBO"]
    assert given[:3] == ["E_q[log p(x|z, y)]", "-KL(q(z|x, y) || p(z))", "ELBO of log p(x|y)"]
    assert given[3] == "log p(x|y), IS k=5" and given[4].startswith("gap log p(x|y) - ELBO")


# ------------------------------------------------------------------- labels, names, captions


def test_the_label_a_figure_decodes_under_and_its_file_name():
    conditional = RunConfig().replace(model={"condition": "label", "classes": CLASSES})
    plain = RunConfig()
    labels = torch.tensor([2, 1, 0])
    assert figure_label(conditional, "grid", FigureOptions()) == DEFAULT_LABEL
    assert figure_label(conditional, "traversals", FigureOptions(base=1), labels) == 1  # the base's own
    assert figure_label(conditional, "grid", FigureOptions(base=1, label=2), labels) == 2
    assert figure_label(conditional, "samples", FigureOptions()) is None  # cycles through the classes
    assert figure_label(conditional, "interpolation", FigureOptions()) is None  # each pair's own
    assert figure_label(plain, "grid", FigureOptions()) is None
    assert figure_file_name("grid", FigureOptions(label=0)) == "grid-label0.png"
    assert figure_file_name("grid", FigureOptions(label=3, z_range=WIDE_RANGE)) == "grid-wide-label3.png"
    assert figure_file_name("samples", FigureOptions(label=7, mode="sample")) == "samples-draw-label7.png"
    assert figure_file_name("traversals", FigureOptions(label=1, base=4)) == "traversals-base4-label1.png"
    assert figure_file_name("scatter", FigureOptions(label=1)) == "scatter.png"  # reads no label
    conditional_captions = {e.kind for e in ALL_FIGURES if e.caption_conditional}
    assert conditional_captions >= {
        "samples",
        "scatter",
        "grid",
        "interpolation",
        "traversals",
        "decomposition",
    }


# ------------------------------------------------------------------------- runs, plot, report


def _pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


@pytest.fixture(scope="module")
def run(conditional_run):
    return Run(conditional_run)


@pytest.mark.slow
def test_plot_draws_every_figure_that_applies_to_a_conditional_run(conditional_run, tmp_path, capsys):
    assert main(["plot", str(conditional_run), "--out", str(tmp_path)]) == 0
    written = {line.removeprefix("written: ") for line in capsys.readouterr().out.splitlines()}
    kinds = {e.kind for e in figures_for(conditional_run)}
    image_kinds = {k for k, f in FIGURE_KINDS.items() if f.data in ("any", "images")} - {"layers"}
    assert kinds == image_kinds  # every image figure but the hierarchical model's
    names = {
        "grid-label0.png"
        if e.file_name == "grid.png"
        else "grid-wide-label0.png"
        if e.file_name == "grid-wide.png"
        else "traversals-label0.png"
        if e.file_name == "traversals.png"
        else e.file_name
        for e in figures_for(conditional_run)
    }  # one label's figures say which
    assert written == {str(tmp_path / name) for name in names}  # none skipped
    for path in written:
        pixels = _pixels(path)
        assert min(pixels.shape) > 200 and pixels.std() > 10, path  # a real picture


def test_the_run_figures_compute_what_the_model_given_y_gives(run):
    config = run.config
    grid = FIGURE_KINDS["grid"].make(run, FigureOptions(n=4, label=3))
    torch.testing.assert_close(grid.x_mean, under(run.model, 3, grid.z.reshape(16, 2)), rtol=0, atol=1e-6)
    assert f"y = {config.model.classes[3]}" in grid.title
    scatter = FIGURE_KINDS["scatter"].make(run, FigureOptions())
    codes = conditional_posterior_means(run.model, run.x, run.labels)
    np.testing.assert_allclose(scatter.points, codes.double().numpy(), rtol=0, atol=0)  # Z = 2: no PCA
    base = 5
    traversals = FIGURE_KINDS["traversals"].make(run, FigureOptions(n=3, base=base))
    own = int(run.labels[base])  # no --label: the base image's own label
    torch.testing.assert_close(traversals.base, codes[base])
    assert f"test image #{base} at its own label y = {config.model.classes[own]}" in traversals.rows.title
    assert f"E[x|z, y = {config.model.classes[own]}]" in traversals.rows.title
    flat = traversals.z.reshape(-1, 2)
    torch.testing.assert_close(
        traversals.x_mean.reshape(len(flat), *run.model.x_shape), under(run.model, own, flat)
    )
    interpolation = FIGURE_KINDS["interpolation"].make(run, FigureOptions(n=3, label=4))
    assert all(int(run.labels[i]) == int(run.labels[j]) == 4 for i, j in interpolation.indices)
    samples = FIGURE_KINDS["samples"].make(run, FigureOptions(n=20))
    assert samples.column_labels == config.model.classes
    one_class = FIGURE_KINDS["samples"].make(run, FigureOptions(n=4, label=7))
    assert f"given the class y = {config.model.classes[7]}" in one_class.title
    with pytest.raises(UserError, match=r"figure option label: 10 is not a label of this run \(0\.\.9\)"):
        FIGURE_KINDS["grid"].make(run, FigureOptions(label=10))
    chart = FIGURE_KINDS["decomposition"].make(run, FigureOptions())
    assert chart.conditional and chart.terms[2][0] == "ELBO of log p(x|y)"


def test_plot_takes_a_label_where_a_figure_decodes_under_one(conditional_run, explore_runs, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert (
        main(["plot", str(conditional_run), "--kind", "grid", "--label", "3", "--n", "5", "--out", str(out)])
        == 0
    )
    assert out.is_file()
    assert main(["plot", str(conditional_run), "--kind", "traversals", "--label", "2", "--n", "3"]) == 0
    assert (conditional_run / "figures" / "traversals-n3-label2.png").is_file()
    capsys.readouterr()
    refused = [
        (["--kind", "scatter", "--label", "3"], "figure kind 'scatter' takes no label"),
        (["--kind", "grid", "--label", "eleven"], "argument --label: label 'eleven' is not a class"),
    ]
    for argv, message in refused:
        assert main(["plot", str(conditional_run), *argv, "--out", str(tmp_path / "x.png")]) == 2
        assert re.search(rf"vaelab: error: .*{re.escape(message)}", capsys.readouterr().err)
    assert main(["plot", str(explore_runs["vae"]), "--kind", "grid", "--label", "3"]) == 2
    assert "is not a conditional run" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_the_report_of_a_conditional_run_shows_every_figure_given_the_label(conditional_run, tmp_path):
    path = report.write_report(conditional_run, out=tmp_path / "report.html", k=20)
    text = path.read_text(encoding="utf-8")
    for caption in (
        "Latent scatter given the label",
        "Latent manifold of one class",
        "Prior samples by class",
        "Linear interpolation within one class",
        "Latent traversals under one label",
        "ELBO decomposition of log p(x|y)",
        "Reconstructions given the label",
        "Label swap: test images",
    ):
        assert caption in text, caption
    assert "This model is conditional on the label y: every figure below" in text
    drawn = {path.name for path in (conditional_run / "figures").glob("*.png")}
    assert {"grid-label0.png", "traversals-label0.png", "scatter.png", "samples.png"} <= drawn
    assert "Not drawn" not in text and "No grid figure" not in text
    assert text.count("<figure>") >= len(figures_for(conditional_run)), "a figure is missing"
    assert runs.read_config(conditional_run).model.condition == "label"


def test_options_with_a_label_are_checked():
    with pytest.raises(UserError, match="label must be a class code >= 0"):
        dataclasses.replace(FigureOptions(), label=-1)


@pytest.mark.parametrize(
    "n, classes, columns",
    [(64, 10, 10), (7, 3, 3), (64, 2, 8), (64, 3, 9), (3, 10, 3), (100, 4, 12)],
)
def test_a_class_cycle_picture_keeps_one_class_per_column_and_stays_about_square(n, classes, columns):
    assert cycle_columns(n, classes) == columns
    assert columns % classes == 0 or columns == n  # column j holds class j mod C
