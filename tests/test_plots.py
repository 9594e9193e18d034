"""Figures, tested by the arrays behind them: shapes, value ranges, latent coordinates, colours.

`trained_pair` trains a small VAE and AE with a 2-D latent on the embedded MNIST subset once per
session (a few seconds each); test_compare.py and test_report.py reuse it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab import plots
from vaelab.cli import main
from vaelab.config import ModelConfig, RunConfig
from vaelab.errors import UserError
from vaelab.models import build_model

# Small and quick, yet a 2-D code that separates digits well beyond chance (see test_compare.py).
PAIR_CONFIG = RunConfig().replace(
    data={"source": "mnist5k", "binarize": "none"},
    model={"latent_dim": 2, "hidden": (256, 128)},
    train={"epochs": 6, "batch_size": 32, "lr": 1e-3, "seed": 0},
)


@dataclass(frozen=True)
class TrainedPair:
    vae: Path
    ae: Path


def trained_pair(tmp_path_factory) -> TrainedPair:
    """A VAE and an AE, same networks, data and budget; trained once per session, then reused."""
    from vaelab import runs
    from vaelab.data import load_data
    from vaelab.evaluate import evaluate_run
    from vaelab.train import train

    base = tmp_path_factory.getbasetemp() / "trained-pair"
    pair = TrainedPair(base / "vae", base / "ae")
    splits = None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # other jobs share the 2 cores; a second thread mostly spins under load
    try:
        for kind, out in (("vae", pair.vae), ("ae", pair.ae)):
            if (out / runs.RUN).is_file() and runs.run_info(out)["status"] == "finished":
                continue
            splits = splits or load_data(PAIR_CONFIG.data)
            config = PAIR_CONFIG.replace(model={"kind": kind})
            train(config, out, overwrite=True, progress=False, splits=splits)
            evaluate_run(out, k=50)
    finally:
        torch.set_num_threads(threads)
    return pair


@pytest.fixture(scope="session")
def pair(tmp_path_factory) -> TrainedPair:
    return trained_pair(tmp_path_factory)


def tiny_model(kind: str = "vae", latent_dim: int = 2, x_shape=(1, 8, 8), seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(kind=kind, latent_dim=latent_dim, hidden=(16,)), x_shape)


# ---------------------------------------------------------------------------------- the grid


def test_quantile_grid_corners_are_the_normal_quantiles_of_the_bin_centres():
    p, z = plots.quantile_coordinates(20)
    np.testing.assert_allclose(p, (np.arange(20) + 0.5) / 20)
    # p = 1/40 = 0.025 and 0.975: the familiar +-1.959964 quantiles of N(0, 1)
    assert z[0] == pytest.approx(-1.959964, abs=1e-6) and z[-1] == pytest.approx(1.959964, abs=1e-6)
    p21, z21 = plots.quantile_coordinates(21)
    assert z21[0] == pytest.approx(
        -math.sqrt(2) * torch.special.erfinv(torch.tensor(1 - 1 / 21.0)).item(), 1e-6
    )
    assert z21[10] == 0.0 and (np.diff(z21) > 0).all()
    np.testing.assert_allclose(z21, -z21[::-1], atol=1e-12)


def test_default_grid_places_21x21_points_at_quantiles_and_decodes_each_cell():
    model = tiny_model()
    grid = plots.latent_grid(model)
    _, q = plots.quantile_coordinates(21)
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


def test_user_range_grid_has_the_range_at_its_corners_and_holds_other_dims():
    model = tiny_model(latent_dim=4)
    base = torch.tensor([0.5, -1.0, 2.0, 3.0])
    grid = plots.latent_grid(model, 5, z_range=(-10, 5, -5, 5), dims=(1, 3), base=base)
    assert grid.z.shape == (5, 5, 4) and grid.spacing == "range" and grid.probabilities is None
    assert (
        grid.z[0, 0, 1] == -10 and grid.z[0, 0, 3] == 5 and grid.z[-1, -1, 1] == 5 and grid.z[-1, -1, 3] == -5
    )
    np.testing.assert_allclose(grid.z1_values, [-10, -6.25, -2.5, 1.25, 5])
    assert (grid.z[..., 0] == 0.5).all() and (grid.z[..., 2] == 2.0).all()
    assert (plots.latent_grid(model, 3).z[..., 2:] == 0).all()  # default: the prior mean


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"z_range": (1, 0, -1, 1)}, "minimum must be below"),
        ({"dims": (0, 0)}, "two different dims"),
        ({"n": 1}, "n >= 2"),
    ],
)
def test_grid_rejects_bad_input(kwargs, message):
    with pytest.raises(UserError, match=message):
        plots.latent_grid(tiny_model(), **kwargs)
    with pytest.raises(UserError, match="at least 2"):
        plots.latent_grid(tiny_model(latent_dim=1))


# ------------------------------------------------------------------------------- the scatter


def test_scatter_colours_follow_labels_and_points_are_the_posterior_means():
    model = tiny_model()
    x = torch.rand(60, 1, 8, 8)
    labels = torch.arange(60) % 3
    scatter = plots.latent_scatter(model, x, labels)
    with torch.no_grad():
        np.testing.assert_allclose(scatter.points, model.posterior(x).mean.double().numpy(), atol=1e-7)
    assert scatter.projection == "none" and scatter.classes == (0, 1, 2)
    assert scatter.colors.shape == (60, 4)
    same = (scatter.colors[:, None, :] == scatter.colors[None, :, :]).all(-1)
    np.testing.assert_array_equal(same, labels[:, None].numpy() == labels[None, :].numpy())
    np.testing.assert_array_equal(
        scatter.colors[labels.numpy() == 2], np.repeat(scatter.class_colors[2:3], 20, 0)
    )


def test_scatter_without_labels_is_one_colour_and_projects_wide_latents_by_pca():
    model = tiny_model(latent_dim=6)
    scatter = plots.latent_scatter(model, torch.rand(40, 1, 8, 8), None)
    assert scatter.points.shape == (40, 2) and scatter.projection == "pca"
    assert len(np.unique(scatter.colors, axis=0)) == 1 and scatter.classes == ()
    assert "PC 1" in scatter.axis_labels[0] and "6-D posterior means" in scatter.axis_labels[0]
    assert "% of their variance" in scatter.axis_labels[1]
    assert 0 < sum(scatter.explained_variance_ratio) <= 1 + 1e-9
    # the projection is centred: PCA coordinates have mean zero
    np.testing.assert_allclose(scatter.points.mean(0), 0, atol=1e-9)


def test_palette_is_distinct_for_up_to_twenty_classes():
    for k in (2, 10, 20, 25):
        palette = plots.class_palette(k)
        assert palette.shape == (k, 4) and len(np.unique(palette, axis=0)) == k


# -------------------------------------------------------------------------- paths and traversals


def test_linear_and_spherical_interpolation_endpoints_and_geometry():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    t = torch.linspace(0, 1, 5)
    for method in ("linear", "spherical"):
        path = plots.interpolate(a, b, t, method)
        assert path.shape == (5, 3)
        torch.testing.assert_close(path[0], a)
        torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(plots.interpolate(a, b, t, "linear")[2], (a + b) / 2)
    slerp = plots.interpolate(a, b, t, "spherical")
    torch.testing.assert_close(slerp[2], (a + b) / math.sqrt(2))
    torch.testing.assert_close(slerp.norm(dim=1), torch.ones(5))  # equal-norm codes keep their norm
    torch.testing.assert_close(plots.interpolate(a, 2 * a, t, "spherical"), plots.interpolate(a, 2 * a, t))
    with pytest.raises(UserError, match="linear, spherical"):
        plots.interpolate(a, b, t, "cubic")


def test_interpolations_decode_paths_between_posterior_means():
    model = tiny_model()
    x = torch.rand(4, 1, 8, 8)
    interp = plots.interpolations(model, x[:2], x[2:], 7, method="spherical")
    assert interp.z.shape == (2, 7, 2) and interp.x_mean.shape == (2, 7, 1, 8, 8)
    torch.testing.assert_close(interp.z[:, 0], plots.posterior_means(model, x[:2]))
    torch.testing.assert_close(interp.z[:, -1], plots.posterior_means(model, x[2:]))
    assert 0 <= interp.x_mean.min() and interp.x_mean.max() <= 1


def test_pairs_have_different_labels_and_no_repeated_rows():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    pairs = plots.pick_pairs(labels, 8, 3, seed=1)
    assert len(pairs) == 3 and len({i for p in pairs for i in p}) == 6
    assert all(labels[i] != labels[j] for i, j in pairs)


def test_latent_statistics_match_the_closed_form_kl_and_ae_has_none():
    model = tiny_model(latent_dim=3).double()
    x = torch.rand(50, 1, 8, 8, dtype=torch.float64)
    stats = plots.latent_statistics(model, x)
    with torch.no_grad():
        q = model.posterior(x)
        total = torch.distributions.kl_divergence(q, model.prior()).mean()
    assert stats.kl_per_dim.shape == (3,) and stats.kl_per_dim.sum() == pytest.approx(float(total), rel=1e-10)
    assert stats.posterior_mean_variance.shape == (3,)
    assert stats.active_units == int((stats.posterior_mean_variance > 0.01).sum())
    ae_stats = plots.latent_statistics(tiny_model("ae", 3), torch.rand(20, 1, 8, 8))
    assert ae_stats.kl_per_dim is None and ae_stats.posterior_mean_variance.shape == (3,)


def test_traversals_are_sorted_by_kl_and_vary_one_dim_per_row():
    model = tiny_model(latent_dim=5)
    x = torch.rand(40, 1, 8, 8)
    stats = plots.latent_statistics(model, x)
    base = torch.arange(5.0)
    trav = plots.latent_traversals(model, x, steps=7, span=2.0, base=base, max_rows=3)
    assert trav.dims == tuple(int(d) for d in np.argsort(-stats.kl_per_dim)[:3])
    assert (np.diff(trav.score) <= 0).all() and trav.score_name == "KL"
    assert trav.z.shape == (3, 7, 5) and trav.x_mean.shape == (3, 7, 1, 8, 8)
    np.testing.assert_allclose(trav.values, np.linspace(-2, 2, 7), atol=1e-6)
    for row, d in enumerate(trav.dims):
        np.testing.assert_allclose(trav.z[row, :, d].numpy(), trav.values, atol=1e-6)
        others = [i for i in range(5) if i != d]
        assert (trav.z[row][:, others] == base[others]).all()
    ae_trav = plots.latent_traversals(tiny_model("ae", 2), x)
    assert ae_trav.score_name == "Var_x(z)" and ae_trav.dims in ((0, 1), (1, 0))


# ---------------------------------------------------------------------- images, curves, charts


def test_reconstruction_rows_alternate_originals_and_decoder_means():
    model = tiny_model()
    x = torch.rand(10, 1, 8, 8)
    rows = plots.reconstruction_rows(model, x, ncols=4)
    assert rows.shape == (24, 1, 8, 8)  # 3 pairs of rows of 4; the last pair padded
    torch.testing.assert_close(rows[:4], x[:4])
    torch.testing.assert_close(rows[4:8], plots.reconstructions(model, x[:4]))
    assert (rows[-2:] == 0).all() and (rows[16:18] == x[8:]).all()


def test_prior_samples_mean_is_in_unit_interval_and_bernoulli_draw_is_binary():
    model = tiny_model()
    mean = plots.prior_samples(model, 16, mode="mean", seed=3)
    drawn = plots.prior_samples(model, 16, mode="sample", seed=3)
    assert mean.shape == drawn.shape == (16, 1, 8, 8)
    assert 0 < mean.min() and mean.max() < 1 and set(drawn.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(plots.prior_samples(model, 16, mode="mean", seed=3), mean)


def test_training_curves_read_the_metrics_and_find_the_best_epoch():
    metrics = [
        {
            "epoch": e,
            "train_elbo_nats": -100 + e,
            "valid_elbo_nats": v,
            "train_log_p_x_given_z_nats": -90 + e,
            "valid_log_p_x_given_z_nats": -95.0,
            "train_kl_nats": 10.0,
            "valid_kl_nats": 9.0,
        }
        for e, v in zip(range(1, 5), [-110.0, -104.0, -103.0, -105.0], strict=True)
    ]
    curves = plots.training_curves(metrics)
    np.testing.assert_array_equal(curves.epoch, [1, 2, 3, 4])
    np.testing.assert_array_equal(curves.valid_elbo, [-110, -104, -103, -105])
    assert curves.best_epoch == 3 and curves.train_kl.shape == (4,)
    # a run selected on its IWAE bound marks the epoch it kept, not the ELBO's best
    for record, bound in zip(metrics, [-100.0, -99.0, -99.5, -98.0], strict=True):
        record["valid_bound_nats"] = bound
    assert plots.training_curves(metrics).best_epoch == 4
    with pytest.raises(UserError, match="no training metrics"):
        plots.training_curves([])


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
    chart = plots.elbo_chart(evaluation)
    terms = dict(chart.terms)
    assert terms["ELBO"] == -100.0 and terms["-KL(q(z|x) || p(z))"] == -10.0
    assert terms["E_q[log p(x, z)]"] + terms["H(q(z|x))"] == pytest.approx(terms["ELBO"])
    assert [v for name, v in chart.terms if name.startswith("gap")] == [5.0]
    np.testing.assert_array_equal(chart.kl_per_dim, [6.0, 4.0])
    assert chart.kl_per_dim_source.endswith("(eval.json)") and chart.active_threshold == 0.01
    # without kl_per_dim in the evaluation, the closed form over the split stands in; without H(q), no bar
    stats = plots.LatentStatistics(np.array([1.0, 2.0]), np.array([0.5, 0.5]), 2, 0.01, 10)
    plain = {k: v for k, v in evaluation.items() if k not in ("kl_per_dim", "entropy", "log_p_xz")}
    chart = plots.elbo_chart(plain, stats)
    assert "H(q(z|x))" not in dict(chart.terms) and chart.kl_per_dim.tolist() == [1.0, 2.0]
    assert plots.elbo_chart({"elbo": None, "log_p_x_given_z": -80.0}) is None


# ------------------------------------------------------------------------ figures of real runs


def _png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def test_plot_all_draws_every_figure_of_a_trained_vae(pair, tmp_path):
    written = plots.plot_all(pair.vae, tmp_path)
    assert set(written) == set(plots.ALL_FIGURES)
    for path in written.values():
        pixels = _png_pixels(path)
        assert min(pixels.shape) > 150 and pixels.std() > 10, path  # a real picture, not a blank canvas


def test_autoencoder_figures_skip_the_elbo_decomposition(pair, tmp_path):
    written = plots.plot_all(pair.ae, tmp_path)
    assert set(written) == set(plots.ALL_FIGURES) - {"decomposition.png"}
    with pytest.raises(UserError, match="autoencoder"):
        plots.plot_run(pair.ae, "decomposition", tmp_path / "d.png")


def test_trained_vae_scatter_has_ten_digit_classes(pair):
    from vaelab import runs
    from vaelab.data import load_data

    splits = load_data(runs.read_config(pair.vae).data)
    scatter = plots.latent_scatter(runs.load_model(pair.vae), splits.test, splits.test_labels)
    assert scatter.classes == tuple(range(10)) and len(np.unique(scatter.colors, axis=0)) == 10
    assert np.isfinite(scatter.points).all() and scatter.points.std(0).min() > 0.1  # not collapsed


def test_cli_plot_draws_a_grid_over_the_documents_range_and_rejects_bad_flags(pair, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert (
        main(
            ["plot", str(pair.vae), "--kind", "grid", "--range", "-10,5,-5,5", "--n", "11", "--out", str(out)]
        )
        == 0
    )
    assert out.is_file() and "written" in capsys.readouterr().out
    assert main(["plot", str(pair.vae), "--kind", "grid", "--range", "-10,5"]) == 2
    assert "--range" in capsys.readouterr().err
    assert main(["plot", str(pair.vae), "--kind", "traversals", "--base", "100000"]) == 2
    assert main(["plot", str(tmp_path / "missing"), "--kind", "grid"]) == 2


@pytest.mark.parametrize(
    "prior, name", [("normal", "N(0, I)"), ("mog", "Gaussian mixture"), ("vamp", "VampPrior")]
)
def test_sample_titles_name_the_models_prior(prior, name):
    model = build_model(ModelConfig(prior=prior, prior_components=3, latent_dim=2, hidden=(8,)), (1, 8, 8))
    for mode in ("mean", "sample"):
        assert name in plots.sample_title(model, 16, mode)
