"""Figure data, tested by the arrays behind them: shapes, value ranges, latent coordinates, colours.

None of these imports matplotlib (test_viz_figures.py checks that, and draws).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaelab.diagnostics import LatentStatistics, latent_statistics, posterior_means
from vaelab.errors import UserError
from vaelab.viz import curves, images, latent

# ---------------------------------------------------------------------------------- the grid


def test_quantile_grid_corners_are_the_normal_quantiles_of_the_bin_centres():
    p, z = latent.quantile_coordinates(20)
    np.testing.assert_allclose(p, (np.arange(20) + 0.5) / 20)
    # p = 1/40 = 0.025 and 0.975: the familiar +-1.959964 quantiles of N(0, 1)
    assert z[0] == pytest.approx(-1.959964, abs=1e-6) and z[-1] == pytest.approx(1.959964, abs=1e-6)
    p21, z21 = latent.quantile_coordinates(21)
    assert z21[0] == pytest.approx(
        -math.sqrt(2) * torch.special.erfinv(torch.tensor(1 - 1 / 21.0)).item(), 1e-6
    )
    assert z21[10] == 0.0 and (np.diff(z21) > 0).all()
    np.testing.assert_allclose(z21, -z21[::-1], atol=1e-12)


def test_default_grid_places_21x21_points_at_quantiles_and_decodes_each_cell(tiny_model):
    model = tiny_model()
    grid = latent.latent_grid(model)
    _, q = latent.quantile_coordinates(21)
    assert grid.z.shape == (21, 21, 2) and grid.spacing == "quantile"
    # top-left cell: smallest z1, largest z2 (z2 grows upwards as on a plot); bottom-right the reverse
    np.testing.assert_allclose(grid.z[0, 0].numpy(), [q[0], q[-1]], atol=1e-6)
    np.testing.assert_allclose(grid.z[-1, -1].numpy(), [q[-1], q[0]], atol=1e-6)
    np.testing.assert_allclose(grid.z[7, :, 0].numpy(), q, atol=1e-6)
    np.testing.assert_allclose(grid.z[:, 3, 1].numpy(), q[::-1], atol=1e-6)
    assert grid.canvas.shape == (21 * 8, 21 * 8)  # no padding between cells
    assert 0.0 <= grid.canvas.min() and grid.canvas.max() <= 1.0  # Bernoulli means
    with torch.no_grad():
        cell = model.likelihood(grid.z[4, 9]).mean.reshape(8, 8).numpy()
    np.testing.assert_allclose(grid.canvas[4 * 8 : 5 * 8, 9 * 8 : 10 * 8], cell, atol=1e-6)


def test_user_range_grid_has_the_range_at_its_corners_and_holds_other_dims(tiny_model):
    model = tiny_model(latent_dim=4)
    base = torch.tensor([0.5, -1.0, 2.0, 3.0])
    grid = latent.latent_grid(model, 5, z_range=(-10, 5, -5, 5), dims=(1, 3), base=base)
    assert grid.z.shape == (5, 5, 4) and grid.spacing == "range" and grid.probabilities is None
    assert (
        grid.z[0, 0, 1] == -10 and grid.z[0, 0, 3] == 5 and grid.z[-1, -1, 1] == 5 and grid.z[-1, -1, 3] == -5
    )
    np.testing.assert_allclose(grid.z1_values, [-10, -6.25, -2.5, 1.25, 5])
    assert (grid.z[..., 0] == 0.5).all() and (grid.z[..., 2] == 2.0).all()
    assert (latent.latent_grid(model, 3).z[..., 2:] == 0).all()  # default: the prior mean


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"z_range": (1, 0, -1, 1)}, "minimum must be below"),
        ({"dims": (0, 0)}, "two different latent dims"),
        ({"n": 1}, "n >= 2"),
    ],
)
def test_grid_rejects_bad_input(tiny_model, kwargs, message):
    with pytest.raises(UserError, match=message):
        latent.latent_grid(tiny_model(), **kwargs)
    with pytest.raises(UserError, match="at least 2"):
        latent.latent_grid(tiny_model(latent_dim=1))


# ------------------------------------------------------------------------------- the scatter


def test_scatter_colours_follow_labels_and_points_are_the_posterior_means(tiny_model):
    model = tiny_model()
    x = torch.rand(60, 1, 8, 8)
    labels = torch.arange(60) % 3
    scatter = latent.latent_scatter(model, x, labels)
    with torch.no_grad():
        np.testing.assert_allclose(scatter.points, model.posterior(x).mean.double().numpy(), atol=1e-7)
    assert scatter.projection == "none" and scatter.classes == (0, 1, 2)
    assert scatter.colors.shape == (60, 4)
    same = (scatter.colors[:, None, :] == scatter.colors[None, :, :]).all(-1)
    np.testing.assert_array_equal(same, labels[:, None].numpy() == labels[None, :].numpy())
    np.testing.assert_array_equal(
        scatter.colors[labels.numpy() == 2], np.repeat(scatter.class_colors[2:3], 20, 0)
    )


def test_scatter_without_labels_is_one_colour_and_projects_wide_latents_by_pca(tiny_model):
    model = tiny_model(latent_dim=6)
    scatter = latent.latent_scatter(model, torch.rand(40, 1, 8, 8), None)
    assert scatter.points.shape == (40, 2) and scatter.projection == "pca"
    assert len(np.unique(scatter.colors, axis=0)) == 1 and scatter.classes == ()
    assert "PC 1" in scatter.axis_labels[0] and "6-D posterior means" in scatter.axis_labels[0]
    assert "% of their variance" in scatter.axis_labels[1]
    assert 0 < sum(scatter.explained_variance_ratio) <= 1 + 1e-9
    # the projection is centred: PCA coordinates have mean zero
    np.testing.assert_allclose(scatter.points.mean(0), 0, atol=1e-9)


def test_palette_is_distinct_for_up_to_twenty_classes():
    for k in (2, 10, 20, 25):
        palette = latent.class_palette(k)
        assert palette.shape == (k, 4) and len(np.unique(palette, axis=0)) == k


# -------------------------------------------------------------------------- paths and traversals


def test_linear_and_spherical_interpolation_endpoints_and_geometry():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    t = torch.linspace(0, 1, 5)
    for method in ("linear", "spherical"):
        path = latent.interpolate(a, b, t, method)
        assert path.shape == (5, 3)
        torch.testing.assert_close(path[0], a)
        torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(latent.interpolate(a, b, t, "linear")[2], (a + b) / 2)
    slerp = latent.interpolate(a, b, t, "spherical")
    torch.testing.assert_close(slerp[2], (a + b) / math.sqrt(2))
    torch.testing.assert_close(slerp.norm(dim=1), torch.ones(5))  # equal-norm codes keep their norm
    torch.testing.assert_close(latent.interpolate(a, 2 * a, t, "spherical"), latent.interpolate(a, 2 * a, t))
    with pytest.raises(UserError, match="linear, spherical"):
        latent.interpolate(a, b, t, "cubic")


def test_interpolations_decode_paths_between_posterior_means(tiny_model):
    model = tiny_model()
    x = torch.rand(4, 1, 8, 8)
    interp = latent.interpolations(model, x[:2], x[2:], 7, method="spherical")
    assert interp.z.shape == (2, 7, 2) and interp.x_mean.shape == (2, 7, 1, 8, 8)
    torch.testing.assert_close(interp.z[:, 0], posterior_means(model, x[:2]))
    torch.testing.assert_close(interp.z[:, -1], posterior_means(model, x[2:]))
    assert 0 <= interp.x_mean.min() and interp.x_mean.max() <= 1


def test_pairs_have_different_labels_and_no_repeated_rows():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    pairs = latent.pick_pairs(labels, 8, 3, seed=1)
    assert len(pairs) == 3 and len({i for p in pairs for i in p}) == 6
    assert all(labels[i] != labels[j] for i, j in pairs)


def test_traversals_are_sorted_by_kl_and_vary_one_dim_per_row(tiny_model):
    model = tiny_model(latent_dim=5)
    x = torch.rand(40, 1, 8, 8)
    stats = latent_statistics(model, x)
    base = torch.arange(5.0)
    trav = latent.latent_traversals(model, x, steps=7, span=2.0, base=base, max_rows=3)
    assert trav.dims == tuple(int(d) for d in np.argsort(-stats.kl_per_dim)[:3])
    assert (np.diff(trav.score) <= 0).all() and trav.score_name == "KL"
    assert trav.z.shape == (3, 7, 5) and trav.x_mean.shape == (3, 7, 1, 8, 8)
    np.testing.assert_allclose(trav.values, np.linspace(-2, 2, 7), atol=1e-6)
    for row, d in enumerate(trav.dims):
        np.testing.assert_allclose(trav.z[row, :, d].numpy(), trav.values, atol=1e-6)
        others = [i for i in range(5) if i != d]
        assert (trav.z[row][:, others] == base[others]).all()
    ae_trav = latent.latent_traversals(tiny_model("ae", 2), x)
    assert ae_trav.score_name == "Var_x(z)" and ae_trav.dims in ((0, 1), (1, 0))


# ---------------------------------------------------------------------- images, curves, charts


def test_reconstruction_rows_alternate_originals_and_decoder_means(tiny_model):
    model = tiny_model()
    x = torch.rand(10, 1, 8, 8)
    rows = images.reconstruction_rows(model, x, ncols=4)
    assert (rows.num_rows, rows.num_columns, rows.cell_size, rows.pad) == (6, 4, (8, 8), 2)
    assert rows.canvas.shape == (6 * 10 - 2, 4 * 10 - 2)  # 3 pairs of rows of 4; the last pair padded
    assert rows.row_labels == ("original", "E[x | z = E_q[z|x]]") * 3

    def cell(i: int, j: int) -> np.ndarray:
        return rows.canvas[i * 10 : i * 10 + 8, j * 10 : j * 10 + 8]

    np.testing.assert_allclose(cell(0, 2), x[2, 0].numpy())
    np.testing.assert_allclose(cell(1, 2), images.reconstructions(model, x[2:3])[0, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(cell(4, 1), x[9, 0].numpy())
    assert (cell(4, 2) == images.BACKGROUND).all() and (cell(5, 3) == images.BACKGROUND).all()  # blank cells


def test_image_rows_places_rows_and_labels_and_pads_short_rows():
    x_shape = (1, 3, 2)  # non-square cells: rows are 3 pixels tall, columns 2 wide
    first, second = torch.rand(4, *x_shape), torch.rand(2, *x_shape)
    rows = images.image_rows(
        [first, second], x_shape, "t", row_labels=["a", "b"], column_labels=list("wxyz"), pad=1
    )
    assert rows.canvas.shape == (2 * 4 - 1, 4 * 3 - 1) and rows.cell_size == (3, 2)
    np.testing.assert_array_equal(rows.canvas[4:7, 3:5], second[1, 0].numpy())
    assert (rows.canvas[4:7, 6:] == images.BACKGROUND).all()
    assert [rows.row_centre(i) for i in range(2)] == [1.0, 5.0]
    assert [rows.column_centre(j) for j in range(4)] == [0.5, 3.5, 6.5, 9.5]


def test_prior_samples_mean_is_in_unit_interval_and_bernoulli_draw_is_binary(tiny_model):
    model = tiny_model()
    mean = images.prior_samples(model, 16, mode="mean", seed=3)
    drawn = images.prior_samples(model, 16, mode="sample", seed=3)
    assert mean.shape == drawn.shape == (16, 1, 8, 8)
    assert 0 < mean.min() and mean.max() < 1 and set(drawn.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(images.prior_samples(model, 16, mode="mean", seed=3), mean)


def test_training_curves_read_the_metrics_and_find_the_best_epoch():
    metrics = [
        {
            "epoch": e,
            "train_elbo_nats": -100.0 + e,
            "valid_elbo_nats": v,
            "train_log_p_x_given_z_nats": -90.0 + e,
            "valid_log_p_x_given_z_nats": -95.0,
            "train_kl_nats": 10.0,
            "valid_kl_nats": 9.0,
            "valid_bound_nats": v,
            "bound": "ELBO",
        }
        for e, v in zip(range(1, 5), [-110.0, -104.0, -103.0, -105.0], strict=True)
    ]
    result = curves.training_curves(metrics)
    np.testing.assert_array_equal(result.epoch, [1, 2, 3, 4])
    (elbo, train, valid), (_, recon, _), (_, kl, _) = result.panels
    assert elbo.startswith("ELBO") and len(result.panels) == 3
    np.testing.assert_array_equal(train, [-99, -98, -97, -96])
    np.testing.assert_array_equal(valid, [-110, -104, -103, -105])
    np.testing.assert_array_equal(recon, [-89, -88, -87, -86])
    np.testing.assert_array_equal(kl, [10.0] * 4)
    assert result.best_epoch == 3
    # a run selected on its IWAE bound marks the epoch it kept, not the ELBO's best
    for record, bound in zip(metrics, [-100.0, -99.0, -99.5, -98.0], strict=True):
        record.update(valid_bound_nats=bound, bound="IWAE k=5")
    assert curves.training_curves(metrics).best_epoch == 4
    with pytest.raises(UserError, match="no training metrics"):
        curves.training_curves([])


def test_training_curves_of_an_autoencoder_are_its_reconstruction_term_alone():
    metrics = [
        {
            "epoch": e,
            "train_log_p_x_given_z_nats": -90.0 + e,
            "valid_log_p_x_given_z_nats": v,
            "valid_bound_nats": v,
            "bound": "reconstruction",
        }
        for e, v in zip(range(1, 4), [-95.0, -93.0, -94.0], strict=True)
    ]
    result = curves.training_curves(metrics)
    ((name, train, valid),) = result.panels
    assert "no KL term and no ELBO" in name and result.best_epoch == 2
    np.testing.assert_array_equal(train, [-89, -88, -87])
    np.testing.assert_array_equal(valid, [-95, -93, -94])


def test_elbo_chart_uses_the_evaluation_and_skips_an_autoencoder():
    evaluation = {
        "split": "test",
        "num_examples": 10,
        "elbo": -100.0,
        "log_p_x_given_z": -90.0,
        "kl": 10.0,
        "log_p_xz": -97.0,
        "entropy": -3.0,
        "log_px": -95.0,
        "k": 50,
        "kl_per_dim": [6.0, 4.0],
        "active_units": 2,
    }
    chart = curves.elbo_chart(evaluation)
    terms = dict(chart.terms)
    assert terms["ELBO"] == -100.0 and terms["-KL(q(z|x) || p(z))"] == -10.0
    assert terms["E_q[log p(x, z)]"] + terms["H(q(z|x))"] == pytest.approx(terms["ELBO"])
    assert [v for name, v in chart.terms if name.startswith("gap")] == [5.0]
    np.testing.assert_array_equal(chart.kl_per_dim, [6.0, 4.0])
    assert chart.kl_per_dim_source.endswith("(eval.json)") and chart.active_threshold == 0.01
    # without kl_per_dim in the evaluation, the closed form over the split stands in; without H(q), no bar
    stats = LatentStatistics(np.array([1.0, 2.0]), np.array([0.5, 0.5]), 2, 0.01, 10)
    plain = {k: v for k, v in evaluation.items() if k not in ("kl_per_dim", "entropy", "log_p_xz")}
    chart = curves.elbo_chart(plain, stats)
    assert "H(q(z|x))" not in dict(chart.terms) and chart.kl_per_dim.tolist() == [1.0, 2.0]
    assert curves.elbo_chart({"elbo": None, "log_p_x_given_z": -80.0}) is None


@pytest.mark.parametrize(
    "prior, name", [("normal", "N(0, I)"), ("mog", "Gaussian mixture"), ("vamp", "VampPrior")]
)
def test_sample_titles_name_the_models_prior(tiny_model, prior, name):
    model = tiny_model(prior=prior, prior_components=3)
    for mode in ("mean", "sample"):
        assert name in images.sample_title(model, 16, mode)


def test_an_autoencoder_has_no_prior_samples_only_decoded_codes(tiny_model):
    # regression: an AE's figures said "prior samples z ~ N(0, I)", but an AE has no prior
    model = tiny_model("ae")
    for mode in ("mean", "sample"):
        title = images.sample_title(model, 16, mode)
        assert "prior samples" not in title and "codes z ~ N(0, I) decoded" in title
        assert "no prior" in title
    grid = images.sample_grid(model, 4, seed=1)
    assert grid.title == images.sample_title(model, 4, "mean") and grid.canvas.shape == (18, 18)


def test_figure_data_errors_name_options_not_command_line_flags(tiny_model):
    model = tiny_model()
    calls = [
        (lambda: images.prior_samples(model, 4, mode="draw"), "mode 'draw'"),
        (lambda: images.prior_samples(model, 0), "n must be >= 1"),
        (lambda: latent.latent_grid(model, 3, z_range=(1, 0, 0, 1)), "z_range"),
        (lambda: latent.latent_grid(tiny_model(latent_dim=3), 3, dims=(0, 5)), r"dims z1,z6: .*z1\.\.z3"),
        (
            lambda: latent.interpolate(torch.zeros(2), torch.ones(2), torch.zeros(3), "cubic"),
            "method 'cubic'",
        ),
        (lambda: latent.latent_traversals(model, torch.rand(4, 1, 8, 8), steps=0), "n must be >= 1"),
    ]
    for call, message in calls:
        with pytest.raises(UserError, match=message) as err:
            call()
        assert "--" not in str(err.value)
