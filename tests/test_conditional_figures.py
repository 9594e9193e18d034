"""The figures of a model conditional on a label (label swap, class-conditional samples), their
place in the registry, `vaelab plot` and the report (`vaelab.viz.conditional`).

The model tests use a tiny untrained conditional VAE (its label changes its networks' outputs from
the start); the run tests use conftest's `conditional_run` (8x8 digits, one epoch) and `pair`.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.cli import main
from vaelab.config import ModelConfig
from vaelab.errors import UserError
from vaelab.experiments import report
from vaelab.models import build_model
from vaelab.viz.conditional import (
    MAX_CLASSES,
    check_label,
    class_decodes,
    class_samples,
    conditional_posterior_means,
    label_swap,
    pick_one_per_class,
    swap_decodes,
)
from vaelab.viz.figures import CONDITIONAL_KINDS, FIGURE_KINDS, figures_for
from vaelab.viz.plot import plot_run

CLASSES = ("zero", "one", "two")


def tiny_conditional(classes=CLASSES, latent_dim: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(latent_dim=latent_dim, hidden=(16,), condition="label", classes=classes)
    return build_model(config, (1, 8, 8)).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_conditional()


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((5, 1, 8, 8), 0.3), generator=generator)
    return x, torch.tensor([0, 1, 2, 1, 0])


# ----------------------------------------------------------------------------- the numbers


def test_label_swap_decodes_the_own_label_code_under_every_label(model, batch):
    x, y = batch
    z, x_mean = swap_decodes(model, x, y, (0, 1, 2))
    assert z.shape == (5, 2) and x_mean.shape == (5, 3, 1, 8, 8)
    # z is q(z|x, y)'s mean at each example's own label, not at another
    torch.testing.assert_close(z, model.given(y).posterior(x).mean, rtol=0, atol=0)
    assert not torch.allclose(z, model.given((y + 1) % 3).posterior(x).mean)
    for c in range(3):  # column c: that same z under label c
        expected = model.given(torch.full((5,), c)).likelihood(z).mean
        torch.testing.assert_close(x_mean[:, c], expected, rtol=0, atol=1e-6)
    # the label changes the decode, and the own label's column is the reconstruction
    assert (x_mean[:, 0] - x_mean[:, 1]).abs().amax(dim=(1, 2, 3)).min() > 1e-4
    own = x_mean[torch.arange(5), y]
    torch.testing.assert_close(own, model.given(y).likelihood(z).mean, rtol=0, atol=1e-6)


def test_conditional_posterior_means_batch_as_one_pass(model, batch):
    x, y = batch
    whole = conditional_posterior_means(model, x, y)
    torch.testing.assert_close(conditional_posterior_means(model, x, y, batch_size=2), whole)


def test_class_samples_share_z_across_classes(model):
    z, x = class_decodes(model, 4, (0, 1, 2), seed=3)
    assert z.shape == (4, 2) and x.shape == (3, 4, 1, 8, 8)
    for c in range(3):
        torch.testing.assert_close(x[c], model.given(torch.full((4,), c)).likelihood(z).mean)
    z_again, _ = class_decodes(model, 4, (0, 1, 2), seed=3)
    z_other, _ = class_decodes(model, 4, (0, 1, 2), seed=4)
    assert torch.equal(z, z_again) and not torch.equal(z, z_other)
    assert not torch.allclose(x[0], x[2])
    _, draws = class_decodes(model, 4, (0, 1, 2), mode="sample", seed=3)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}  # Bernoulli draws, not means
    with pytest.raises(UserError, match="mode 'median' is not one of mean, sample"):
        class_decodes(model, 4, (0, 1), mode="median")
    with pytest.raises(UserError, match="n must be >= 1"):
        class_decodes(model, 0, (0, 1))


def test_one_example_of_each_class_comes_first():
    labels = torch.tensor([2, 2, 0, 1, 1, 0, 2, 3])
    picked = pick_one_per_class(labels, 6, seed=0)
    assert labels[picked[:4]].tolist() == [0, 1, 2, 3] and len(set(picked.tolist())) == 6
    assert torch.equal(picked, pick_one_per_class(labels, 6, seed=0))
    assert len(pick_one_per_class(labels, 3, seed=1)) == 3 and len(pick_one_per_class(labels, 99, 0)) == 8


def test_labels_are_checked_against_the_model(model, tiny_model):
    assert check_label(model, 2) == 2 and check_label(tiny_model(), None) is None
    with pytest.raises(UserError, match=r"label: 3 is not a label of this run \(0\.\.2\)"):
        check_label(model, 3)
    with pytest.raises(UserError, match="conditional on a label; give one of 0..2"):
        check_label(model, None)
    with pytest.raises(UserError, match="not conditional on a label; send none"):
        check_label(tiny_model(), 0)


# ----------------------------------------------------------------------------- the pictures


def test_label_swap_rows_name_examples_and_labels(model, batch):
    x, y = batch
    rows = label_swap(model, x, y, indices=[10, 11, 12, 13, 14])
    assert (rows.num_rows, rows.num_columns) == (5, 4)
    assert rows.column_labels == ("original", *CLASSES) and rows.row_labels[1] == "#11 (one)"
    assert rows.canvas.shape == (5 * 10 - 2, 4 * 10 - 2)
    np.testing.assert_array_equal(rows.canvas[:8, :8], x[0, 0].numpy())  # the original comes first


def test_colour_images_stay_rgb():
    torch.manual_seed(0)
    config = ModelConfig(latent_dim=2, hidden=(16,), condition="label", classes=CLASSES)
    model = build_model(config, (3, 6, 6)).eval()
    rows = label_swap(model, torch.rand(2, 3, 6, 6), torch.tensor([0, 2]))
    assert rows.canvas.shape == (2 * 8 - 2, 4 * 8 - 2, 3)
    assert class_samples(model, 2).canvas.shape == (3 * 8 - 2, 2 * 8 - 2, 3)


def test_many_classes_are_cut_to_a_readable_number_and_the_title_says_so():
    names = tuple(f"c{i}" for i in range(MAX_CLASSES + 5))
    model = tiny_conditional(names)
    rows = class_samples(model, 3)
    assert rows.num_rows == MAX_CLASSES and f"the first {MAX_CLASSES} of {MAX_CLASSES + 5}" in rows.title
    swap = label_swap(model, torch.zeros(1, 1, 8, 8), torch.tensor([0]))
    assert swap.num_columns == MAX_CLASSES + 1


# ------------------------------------------------------------------------- runs, plot, report


def _pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def test_plot_draws_both_figures_of_a_conditional_run(conditional_run, tmp_path):
    assert {e.kind for e in figures_for(conditional_run)} >= set(CONDITIONAL_KINDS)
    for kind in CONDITIONAL_KINDS:
        path = plot_run(conditional_run, kind, tmp_path / f"{kind}.png", device="cpu")
        pixels = _pixels(path)
        assert min(pixels.shape) > 300 and pixels.std() > 10, kind  # a real picture, not a blank canvas


@pytest.mark.slow
def test_plain_runs_leave_the_conditional_figures_out_and_say_why(pair, tmp_path, capsys):
    assert not {e.kind for e in figures_for(pair.vae)} & set(CONDITIONAL_KINDS)
    with pytest.raises(UserError, match="not conditional on a label"):
        plot_run(pair.vae, "label-swap", tmp_path / "s.png")
    assert main(["plot", str(pair.vae), "--kind", "class-samples", "--out", str(tmp_path / "c.png")]) == 2
    assert re.search(r"vaelab: error: .*not conditional on a label", capsys.readouterr().err)
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "c.png").exists()
    assert all(FIGURE_KINDS[kind].data == "images" for kind in CONDITIONAL_KINDS)  # a table: refused


def test_report_of_a_conditional_run_has_its_section(conditional_run, tmp_path):
    path = report.write_report(conditional_run, out=tmp_path / "report.html", k=20)
    assert (conditional_run / "figures" / "label-swap.png").is_file()
    assert (conditional_run / "figures" / "class-samples.png").is_file()
    text = path.read_text(encoding="utf-8")
    assert 'id="conditional"' in text and "Conditional on the label" in text
    assert "log p(x|y), importance sampled" in text and "ELBO of log p(x|y)" in text
    assert "Label swap: test images" in text and "Class-conditional samples" in text
    assert "log p(x|y) is not log p(x)" in text
    assert "ELBO gap: log p(x) − ELBO" not in text  # the unconditional wording is not used
