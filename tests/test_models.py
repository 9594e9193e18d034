"""Models: the protocol's shapes for every network and prior, and the priors' densities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal

from vaelab.config import ModelConfig, preset
from vaelab.distributions import draw
from vaelab.errors import UserError
from vaelab.models import LatentVariableModel, build_model
from vaelab.nets import count_parameters


@pytest.mark.parametrize("net", ["mlp", "gated", "conv", "resnet"])
@pytest.mark.parametrize("prior", ["normal", "mog", "vamp"])
def test_protocol_shapes_for_every_net_and_prior(net, prior):
    model = build_model(
        ModelConfig(net=net, prior=prior, prior_components=7, latent_dim=3, hidden=(16,)), (1, 8, 8)
    )
    assert isinstance(model, LatentVariableModel)
    x = torch.rand(5, 1, 8, 8)
    q = model.posterior(x)
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    p_z = model.prior()
    assert p_z.batch_shape == () and p_z.event_shape == (3,)
    z = draw(p_z, (4, 5), torch.Generator().manual_seed(0))
    assert z.shape == (4, 5, 3) and p_z.log_prob(z).shape == (4, 5)
    p_x = model.likelihood(z)
    assert p_x.batch_shape == (4, 5) and p_x.log_prob(x).shape == (4, 5)


def test_vamp_prior_is_the_mean_of_the_posteriors_at_the_pseudo_inputs():
    model = build_model(ModelConfig(prior="vamp", prior_components=4, latent_dim=2, hidden=(8,)), (1, 8, 8))
    z = torch.randn(6, 2, dtype=torch.float32)
    u = torch.nn.functional.hardtanh(model.pseudo_inputs, 0.0, 1.0)
    q_u = model.posterior(u)  # batch (4,)
    by_hand = torch.logsumexp(q_u.log_prob(z.unsqueeze(1)), dim=1) - math.log(4)  # (6,)
    torch.testing.assert_close(model.prior().log_prob(z), by_hand)


def test_mixture_prior_with_one_component_is_that_gaussian():
    model = build_model(ModelConfig(prior="mog", prior_components=1, latent_dim=3, hidden=(8,)), (1, 8, 8))
    z = torch.randn(5, 3)
    loc, scale = model.prior_means[0], model.prior_log_scales[0].exp()
    torch.testing.assert_close(model.prior().log_prob(z), Independent(Normal(loc, scale), 1).log_prob(z))


def test_mixture_prior_integrates_to_one_in_1d():
    model = build_model(ModelConfig(prior="mog", prior_components=3, latent_dim=1, hidden=(8,)), (1, 8, 8))
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float32).unsqueeze(-1)
    density = model.prior().log_prob(grid).exp().detach()
    assert abs(float(torch.trapezoid(density, grid[:, 0])) - 1.0) < 1e-3


def test_gated_net_doubles_the_hidden_projections():
    mlp = build_model(ModelConfig(net="mlp", hidden=(10,), latent_dim=2), (4,))
    gated = build_model(ModelConfig(net="gated", hidden=(10,), latent_dim=2), (4,))
    # a gated layer holds a value and a gate projection: (4*20+20) + (2*20+20) more than the mlp's
    assert count_parameters(gated) - count_parameters(mlp) == (4 * 10 + 10) + (2 * 10 + 10)


def test_presets_are_valid_configs():
    assert preset("classic").model.hidden == (400,)
    recipe = preset("recipe")
    assert recipe.model.prior == "vamp" and recipe.objective.name == "iwae"


@pytest.mark.parametrize("net", ["mlp", "gated", "conv"])
def test_dropout_acts_in_training_only_and_is_absent_at_zero(net):
    plain = build_model(ModelConfig(net=net, latent_dim=3, hidden=(32, 16)), (1, 8, 8))
    dropped = build_model(ModelConfig(net=net, latent_dim=3, hidden=(32, 16), dropout=0.5), (1, 8, 8))
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    layers = [m for m in dropped.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(layers) == 4 and all(m.p == 0.5 for m in layers)  # after each hidden layer of both nets
    assert count_parameters(plain) == count_parameters(dropped)
    x = torch.rand(4, 1, 8, 8)
    dropped.train()
    assert not torch.equal(dropped.posterior(x).mean, dropped.posterior(x).mean)
    dropped.eval()
    torch.testing.assert_close(dropped.posterior(x).mean, dropped.posterior(x).mean, rtol=0, atol=0)


def test_a_vamp_prior_needs_a_gaussian_posterior():
    model = build_model(ModelConfig(kind="ae", prior="vamp", prior_components=3, hidden=(8,)), (1, 8, 8))
    with pytest.raises(UserError, match="model.prior vamp: needs a Gaussian q"):
        model.prior()


@pytest.mark.parametrize(
    "likelihood, params",
    [
        ("bernoulli", 1),
        ("gaussian", 1),
        ("logistic", 1),
        ("discretized-logistic", 2),
        ("logistic-mixture", 15),
        ("categorical", 256),
    ],
)
def test_the_decoder_outputs_the_likelihoods_parameters_per_subpixel(likelihood, params):
    model = build_model(
        ModelConfig(net="resnet", likelihood=likelihood, mixtures=5, hidden=(8,), width=4), (3, 8, 8)
    )
    assert model.likelihood_head.params == params
    out = model.decoder(torch.randn(2, 2))
    assert out.shape == ((2, 3, 8, 8) if params == 1 else (2, params, 3, 8, 8))


def test_a_learned_sigma_is_a_parameter_for_both_continuous_families_and_absent_for_discrete_ones():
    for likelihood in ("gaussian", "logistic"):
        model = build_model(ModelConfig(likelihood=likelihood, sigma=None, hidden=(8,)), (1, 4, 4))
        assert "likelihood_head.log_scale" in dict(model.named_parameters())
    model = build_model(ModelConfig(likelihood="categorical", hidden=(8,)), (1, 4, 4))
    assert "likelihood_head.log_scale" not in model.state_dict()


@pytest.mark.slow
def test_a_colour_run_trains_evaluates_and_reports_bits_per_dim_of_the_data(tmp_path):
    """End to end on 8-bit colour data read from a file: the mixture scores the levels (no
    correction); the gaussian scores dequantized data and its evaluation carries -D log 256."""
    from vaelab.config import RunConfig
    from vaelab.evaluate import evaluate_run
    from vaelab.train import train

    np.save(
        tmp_path / "colour.npy", np.random.default_rng(0).integers(0, 256, (40, 3, 8, 8)).astype(np.uint8)
    )
    for likelihood, log_det in (("logistic-mixture", 0.0), ("gaussian", -192 * math.log(256))):
        config = RunConfig().replace(
            data={"source": f"npy:{tmp_path / 'colour.npy'}"},
            model={"net": "resnet", "likelihood": likelihood, "mixtures": 2, "width": 4, "hidden": (8,)},
            train={"epochs": 1, "batch_size": 16},
        )
        train(config, tmp_path / likelihood, progress=False)
        evaluation = evaluate_run(tmp_path / likelihood, k=5, progress=False)
        assert evaluation.log_det_nats == pytest.approx(log_det)
        nll_bpd = evaluation.to_dict()["nll_bpd"]
        assert nll_bpd == pytest.approx(-evaluation.log_px / (192 * math.log(2)))
        # the data are uniform noise, 8 bits per subpixel: no model of the data as given does better
        # (without the correction, the gaussian's figure would be 8 bits lower)
        assert nll_bpd > 7.9


def test_settings_of_the_new_families_and_nets_are_refused_where_they_would_be_ignored():
    from vaelab.config import RunConfig

    config = RunConfig().replace(model={"likelihood": "categorical", "net": "mlp"})
    ignored = config.ignored_settings({"model.mixtures", "model.width", "model.sigma"})
    assert sorted(line.split(":")[0] for line in ignored) == ["model.mixtures", "model.sigma", "model.width"]
    fitting = RunConfig().replace(model={"likelihood": "logistic-mixture", "net": "resnet"})
    assert fitting.ignored_settings({"model.mixtures", "model.width"}) == []
    assert RunConfig().replace(model={"likelihood": "logistic"}).ignored_settings({"model.sigma"}) == []
