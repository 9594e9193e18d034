"""The Ladder VAE (vaelab.hierarchical) against exact answers: a linear-Gaussian hierarchy whose
p(x), p(z) and q(z|x) are Gaussians in closed form, in float64; per-layer KLs; free bits; configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.distributions import MultivariateNormal

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.distributions import draw
from vaelab.errors import UserError
from vaelab.estimators import LayeredELBOTerms, elbo_terms, log_px_importance
from vaelab.hierarchical import HierarchicalVAE, LadderPosterior, LadderPrior
from vaelab.models import build_model
from vaelab.objectives import beta_elbo, free_bits_kl, iwae, logged_term_names, objective_for

SIGMA = 0.5  # the likelihood's fixed scale
D = 3  # dims of x


def linear_hierarchy(size: int, seed: int = 0) -> tuple[HierarchicalVAE, dict[str, torch.Tensor]]:
    """A 2-layer linear-Gaussian model, float64: z2 ~ N(0, I), z1 | z2 ~ N(W2 z2 + b2, diag(s2^2)),
    x | z ~ N(A z + b, SIGMA^2 I) with A = [W1 | V]; the encoder's maps random. Returns the model
    and its generative parameters."""
    config = (
        RunConfig()
        .replace(
            model={"layers": 2, "latent_dim": size, "hidden": (), "likelihood": "gaussian", "sigma": SIGMA}
        )
        .model
    )
    torch.manual_seed(seed)
    model = build_model(config, (D,)).double()
    assert isinstance(model, HierarchicalVAE)
    g = torch.Generator().manual_seed(seed)
    p = {
        "W2": torch.randn(size, size, generator=g, dtype=torch.float64),
        "b2": torch.randn(size, generator=g, dtype=torch.float64),
        "log_s2": 0.3 * torch.randn(size, generator=g, dtype=torch.float64),
        "A": torch.randn(D, 2 * size, generator=g, dtype=torch.float64),
        "b": torch.randn(D, generator=g, dtype=torch.float64),
    }
    down, decoder = model.down[0][1], model.decoder[0]  # (Flatten, Linear) and (Linear, Unflatten)
    with torch.no_grad():
        down.weight.copy_(torch.cat([p["W2"], torch.zeros(size, size, dtype=torch.float64)]))
        down.bias.copy_(torch.cat([p["b2"], 2 * p["log_s2"]]))
        decoder.weight.copy_(p["A"])
        decoder.bias.copy_(p["b"])
    return model, p


def joint_prior(p: dict[str, torch.Tensor]) -> MultivariateNormal:
    """p(z) of `linear_hierarchy` as one Gaussian over z = (z1, z2)."""
    size = len(p["b2"])
    W2, S2 = p["W2"], torch.diag(torch.exp(2 * p["log_s2"]))
    cov = torch.cat(
        [torch.cat([W2 @ W2.T + S2, W2], 1), torch.cat([W2.T, torch.eye(size, dtype=W2.dtype)], 1)]
    )
    return MultivariateNormal(torch.cat([p["b2"], torch.zeros(size, dtype=W2.dtype)]), cov)


def exact_log_px(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log N(x; A m_z + b, A C_z A^T + SIGMA^2 I): x (B, D) -> (B,)."""
    prior = joint_prior(p)
    A = p["A"]
    cov = A @ prior.covariance_matrix @ A.T + SIGMA**2 * torch.eye(D, dtype=A.dtype)
    return MultivariateNormal(A @ prior.loc + p["b"], cov).log_prob(x)


def joint_posterior(
    model: HierarchicalVAE, p: dict[str, torch.Tensor], x: torch.Tensor
) -> MultivariateNormal:
    """q(z|x) of the ladder with linear maps as one Gaussian per row, built independently of
    `LadderPosterior`: z2 ~ N(a, diag(v2)); z1 | z2 ~ N(M z2 + c, diag(v1)) with v1 = 1/(1/vh + 1/s2^2),
    M = diag(v1 / s2^2) W2, c = v1 (mu_h / vh + b2 / s2^2) (the product of the two Gaussians)."""
    loc_hat, log_var_hat = model.bottom_up(x)  # (B, 2, Z')
    mu_h, vh = loc_hat[:, 0], log_var_hat[:, 0].exp()
    a, v2 = loc_hat[:, 1], log_var_hat[:, 1].exp()
    s2 = torch.exp(2 * p["log_s2"])
    v1 = 1 / (1 / vh + 1 / s2)  # (B, Z')
    M = (v1 / s2)[:, :, None] * p["W2"]  # (B, Z', Z')
    c = v1 * (mu_h / vh + p["b2"] / s2)
    A2 = torch.diag_embed(v2)
    mean = torch.cat([(M @ a[:, :, None])[..., 0] + c, a], -1)
    top = torch.cat([M @ A2 @ M.transpose(1, 2) + torch.diag_embed(v1), M @ A2], -1)
    bottom = torch.cat([A2 @ M.transpose(1, 2), A2], -1)
    return MultivariateNormal(mean, torch.cat([top, bottom], 1))


def test_joint_log_densities_equal_the_gaussians_computed_directly():
    model, p = linear_hierarchy(size=2)
    x = torch.randn(5, D, dtype=torch.float64)
    z = torch.randn(7, 5, 4, dtype=torch.float64)  # any z, not the posterior's own samples
    with torch.no_grad():
        q, p_z = model.posterior(x), model.prior()
        assert isinstance(q, LadderPosterior) and isinstance(p_z, LadderPrior)
        torch.testing.assert_close(p_z.log_prob(z), joint_prior(p).log_prob(z), rtol=0, atol=1e-10)
        torch.testing.assert_close(
            q.log_prob(z), joint_posterior(model, p, x).log_prob(z), rtol=0, atol=1e-10
        )
        # the per-layer terms are the factors: log q(z2|x) alone is the top layer's Gaussian
        top = joint_posterior(model, p, x)
        marginal = MultivariateNormal(top.loc[:, 2:], top.covariance_matrix[:, 2:, 2:])
        torch.testing.assert_close(
            q.log_prob_layers(z)[..., 1], marginal.log_prob(z[..., 2:]), rtol=0, atol=1e-10
        )


def test_samples_follow_the_joint_gaussians():
    model, p = linear_hierarchy(size=2)
    x = torch.randn(1, D, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    n = 40_000
    with torch.no_grad():
        for dist, exact in (
            (model.posterior(x), joint_posterior(model, p, x)),
            (model.prior(), joint_prior(p)),
        ):
            z = draw(dist, (n,), g).reshape(n, 4)
            loc, cov = exact.loc.reshape(4), exact.covariance_matrix.reshape(4, 4)
            # the sample mean is within 5 standard errors of the exact mean in every dim
            assert ((z.mean(0) - loc).abs() < 5 * (cov.diagonal() / n).sqrt()).all()
            torch.testing.assert_close(torch.cov(z.T), cov, rtol=0.05, atol=0.05)
            if isinstance(dist, LadderPrior):  # its estimated marginal moments
                torch.testing.assert_close(dist.mean, loc, rtol=0, atol=0.1)
                torch.testing.assert_close(dist.variance, cov.diagonal(), rtol=0.1, atol=0.05)
            # and the sample log q is that of the joint Gaussian (the cached terms of the draw)
            if isinstance(dist, LadderPosterior):
                z = draw(dist, (3,), g)
                torch.testing.assert_close(dist.log_prob(z), exact.log_prob(z), rtol=0, atol=1e-10)


def exact_posterior_model(size_one_model: HierarchicalVAE, p: dict[str, torch.Tensor]) -> None:
    """Set the encoder of a Z' = 1, V = 0 model so that q(z|x) is the exact p(z|x) (both factors)."""
    model = size_one_model
    w, b = p["A"][:, 0], p["b"]  # x = w z1 + b + noise (V = 0)
    a, b2, s2 = p["W2"][0, 0], p["b2"][0], torch.exp(2 * p["log_s2"][0])
    # bottom-up term of z1: the likelihood in z1, N(w.(x - b) / |w|^2, SIGMA^2 / |w|^2)
    # top: p(z2|x) with x = w a z2 + (w b2 + b) + n, n ~ N(0, s2 w w^T + SIGMA^2 I)
    noise = s2 * torch.outer(w, w) + SIGMA**2 * torch.eye(D, dtype=w.dtype)
    gain = a * torch.linalg.solve(noise, w)  # (D,)
    var2 = 1 / (1 + a * (w @ gain))
    with torch.no_grad():
        model.encoder[1].weight.copy_(torch.eye(D, dtype=w.dtype))  # d1 = x
        model.encoder[1].bias.zero_()
        model.up[0][1].weight.copy_(torch.eye(D, dtype=w.dtype))  # d2 = d1
        model.up[0][1].bias.zero_()
        head1, head2 = model.q_heads
        head1.weight.copy_(torch.stack([w / (w @ w), torch.zeros(D, dtype=w.dtype)]))
        head1.bias.copy_(torch.stack([-(w @ b) / (w @ w), torch.log(SIGMA**2 / (w @ w))]))
        head2.weight.copy_(torch.stack([var2 * gain, torch.zeros(D, dtype=w.dtype)]))
        head2.bias.copy_(torch.stack([-var2 * gain @ (w * b2 + b), torch.log(var2)]))


def test_with_the_exact_posterior_every_bound_is_log_px_and_importance_sampling_converges():
    model, p = linear_hierarchy(size=1, seed=2)
    with torch.no_grad():
        model.decoder[0].weight[:, 1] = 0.0  # V = 0: x depends on z2 only through z1
    p["A"] = model.decoder[0].weight.detach().clone()
    exact_posterior_model(model, p)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, D, dtype=torch.float64)
    log_px = exact_log_px(p, x)
    with torch.no_grad():
        # q = p(z|x): log p(x, z) - log q(z|x) = log p(x) for every sample (to the float32 in which
        # the likelihood head scores, `vaelab.models.Likelihood`; q and p(z) are float64 here)
        terms = elbo_terms(model, x, 4, generator=g)
        torch.testing.assert_close(terms.elbo, log_px, rtol=0, atol=1e-5)
        torch.testing.assert_close(iwae(model, x, g, k=3).surrogate, log_px, rtol=0, atol=1e-5)
        # a worse encoder: the ELBO drops below log p(x), and IS with many samples converges to it
        model.q_heads[0].bias[0] += 0.5
        model.q_heads[1].bias[1] += 1.0
        worse = elbo_terms(model, x, 2000, generator=g).elbo
        assert (worse < log_px - 0.05).all()
        estimate = log_px_importance(model, x, 20_000, generator=g)
        assert ((estimate.value - log_px).abs() < 4 * estimate.stderr + 1e-3).all()


def test_layer_kls_sum_to_the_kl_of_the_same_samples_and_converge_to_the_top_layers_closed_form():
    model, p = linear_hierarchy(size=2, seed=3)
    x = torch.randn(4, D, dtype=torch.float64)
    with torch.no_grad():
        terms = elbo_terms(model, x, 3, generator=torch.Generator().manual_seed(5))
        assert isinstance(terms, LayeredELBOTerms) and terms.kl_layers.shape == (4, 2)
        torch.testing.assert_close(terms.kl_layers.sum(-1), terms.kl, rtol=0, atol=1e-12)
        # the same samples, scored afresh (a clone: no cached terms) by q and p directly
        q, p_z = model.posterior(x), model.prior()
        z = draw(q, (3,), torch.Generator().manual_seed(5)).clone()
        torch.testing.assert_close(terms.kl, (q.log_prob(z) - p_z.log_prob(z)).mean(0), rtol=0, atol=1e-10)
        # the top layer's Monte Carlo KL converges to KL(N(mu_hat_2, v_hat_2) || N(0, I))
        many = elbo_terms(model, x, 20_000, generator=torch.Generator().manual_seed(6))
        loc, log_var = (t[:, 1] for t in model.bottom_up(x))
        exact_top = 0.5 * (loc.square() + log_var.exp() - log_var - 1).sum(-1)
        torch.testing.assert_close(many.kl_layers[:, 1], exact_top, rtol=0, atol=0.05)


def test_free_bits_surrogate_by_hand():
    kl = torch.tensor([[0.1, 2.0], [0.3, 4.0], [0.2, 0.0]], requires_grad=True)  # (B, G)
    penalty = free_bits_kl(kl, 1.0)
    # layer means 0.2 (below 1: costs the constant 1) and 2.0 (above: its own KLs)
    torch.testing.assert_close(penalty, torch.tensor([3.0, 5.0, 1.0]))
    assert penalty.mean().item() == pytest.approx(max(1.0, 0.2) + max(1.0, 2.0))
    penalty.sum().backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 1.0]] * 3))
    # on a model: the surrogate's mean is recon - beta sum_i max(lambda, KL_i), the terms the ELBO's
    model, _ = linear_hierarchy(size=2, seed=4)
    x = torch.randn(8, D, dtype=torch.float64)
    freed = beta_elbo(model, x, torch.Generator().manual_seed(0), beta=0.5, free_bits=3.0)
    plain = beta_elbo(model, x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(freed.terms.elbo, plain.terms.elbo, rtol=0, atol=0)
    assert isinstance(freed.terms, LayeredELBOTerms)
    by_hand = freed.terms.log_p_x_given_z.mean() - 0.5 * freed.terms.kl_layers.mean(0).clamp(min=3.0).sum()
    torch.testing.assert_close(freed.surrogate.mean(), by_hand, rtol=0, atol=1e-12)
    assert objective_for(model, "iwae", free_bits=3.0) is iwae  # (refused for iwae by the config)


def test_logged_names_and_iwae_terms_carry_each_layer():
    model, _ = linear_hierarchy(size=2)
    assert logged_term_names(model) == ("elbo", "log_p_x_given_z", "kl", "kl_layer1", "kl_layer2")
    x = torch.randn(3, D, dtype=torch.float64)
    out = iwae(model, x, torch.Generator().manual_seed(0), k=4)
    assert isinstance(out.terms, LayeredELBOTerms)
    torch.testing.assert_close(out.terms.kl_layers.sum(-1), out.terms.kl, rtol=0, atol=1e-12)
    assert (out.surrogate >= out.terms.elbo - 1e-12).all()  # L_k >= the mean of its k ELBO terms


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"model": {"layers": 2, "kind": "ae"}}, "model: .*layers: an ae has one deterministic code"),
        ({"model": {"layers": 2, "posterior": "iaf"}}, "model: .*layers: .*posterior iaf applies to one"),
        ({"model": {"layers": 0}}, "model.layers: Input should be greater than or equal to 1"),
        (
            {"objective": {"free_bits": -1.0}},
            "objective.free_bits: Input should be greater than or equal to 0",
        ),
    ],
)
def test_bad_configs_are_refused_in_one_line(fields, match):
    with pytest.raises(UserError, match=match) as caught:
        RunConfig.from_dict(fields)
    assert "\n" not in str(caught.value)


def test_free_bits_with_iwae_or_an_ae_is_refused_as_ignored():
    iwae_config = RunConfig().replace(objective={"name": "iwae", "free_bits": 1.0})
    assert iwae_config.ignored_settings({"objective.free_bits"}) == [
        "objective.free_bits: ignored (free bits apply to the elbo objective (the iwae bound has no "
        "per-layer KL term))"
    ]
    ae = RunConfig().replace(model={"kind": "ae"}, objective={"free_bits": 1.0})
    assert ae.ignored_settings({"objective.free_bits"}) == [
        "objective.free_bits: ignored (an ae trains on the reconstruction term only)"
    ]


def test_cli_refuses_layers_with_an_ae_in_one_line(tmp_path, capsys):
    from vaelab.cli import main

    code = main(["train", "--data", "digits", "--model", "ae", "--layers", "2", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("vaelab: error: ") and "layers: an ae has one deterministic" in err
    assert "\n" not in err and not (tmp_path / "r").exists()


def test_a_hierarchical_run_logs_evaluates_and_draws_each_layer(tmp_path):
    from vaelab.evaluate import evaluate_run
    from vaelab.train import train
    from vaelab.viz.plot import plot_run

    config = RunConfig().replace(
        data={"source": "digits"},
        model={
            "layers": 2,
            "latent_dim": 2,
            "net": "gated",
            "hidden": (16,),
            "prior": "vamp",
            "prior_components": 3,
        },
        objective={"kl_warmup_epochs": 1, "free_bits": 0.1},
        train={"epochs": 2, "batch_size": 128, "threads": 1},
    )
    train(config, tmp_path / "run", progress=False)
    history = runs.read_metrics(tmp_path / "run")
    for record in history:
        for split in ("train", "valid"):
            layers = record[f"{split}_kl_layer1_nats"] + record[f"{split}_kl_layer2_nats"]
            assert layers == pytest.approx(record[f"{split}_kl_nats"], abs=1e-6)
    model = runs.load_model(tmp_path / "run")
    assert isinstance(model, HierarchicalVAE) and model.latent_dim == 4
    # evaluate: the KL and the active units per layer, which add up to the whole z's
    result = evaluate_run(tmp_path / "run", k=4, progress=False)
    assert result.kl_layers is not None and result.active_units_layers is not None
    assert sum(result.kl_layers) == pytest.approx(result.kl, abs=1e-6)  # (float32 sums)
    assert sum(result.active_units_layers) == result.active_units
    assert runs.read_evaluation(tmp_path / "run" / "eval.json")["kl_layers"] == list(result.kl_layers)
    figure = plot_run(tmp_path / "run", "layers")
    assert figure.name == "layers.png" and figure.stat().st_size > 10_000
    # export refuses it in one line; the explorer maps its top layer (test_explore_hierarchical)
    from vaelab.explore.space import LatentSpace
    from vaelab.export import exportable
    from vaelab.viz.run import Run

    space = LatentSpace(Run(tmp_path / "run"), k=10)
    assert (
        space.latent_dim == config.model.latent_dim and "the map shows the top layer z2" in space.layer_note
    )
    with pytest.raises(UserError, match="model.layers 2: a hierarchical model's q"):
        exportable(config.model, tmp_path / "run")
    # a record with a stray or an unpaired per-layer KL is refused, naming the line
    lines = (tmp_path / "run" / runs.METRICS).read_text().splitlines()
    record = json.loads(lines[0])
    del record["valid_kl_layer2_nats"]
    (tmp_path / "run" / runs.METRICS).write_text(json.dumps(record) + "\n")
    with pytest.raises(UserError, match=r"metrics.jsonl.*per-layer KLs: expected"):
        runs.read_metrics(tmp_path / "run")


def test_top_layer_priors_and_nets_build_and_score():
    for prior in ("normal", "mog", "vamp"):
        for net in ("mlp", "gated", "conv"):
            fields = {"layers": 3, "latent_dim": 2, "net": net, "hidden": (8,), "prior": prior}
            config = RunConfig().replace(model={**fields, "prior_components": 2}).model
            model = build_model(config, (1, 8, 8))
            x = torch.rand(4, 1, 8, 8).bernoulli()
            with torch.no_grad():
                terms = elbo_terms(model, x, 2, generator=torch.Generator().manual_seed(0))
                samples = draw(model.prior(), (5,), torch.Generator().manual_seed(0))
            assert terms.kl_layers.shape == (4, 3) and torch.isfinite(terms.elbo).all(), (prior, net)
            assert samples.shape == (5, 6) and model.prior().mean.shape == (6,)
            assert torch.isfinite(model.posterior(x).mean).all()


def test_the_layers_figure_applies_to_hierarchical_runs_only(tmp_path):
    from vaelab.viz.figures import FIGURE_KINDS

    applies = FIGURE_KINDS["layers"].applies
    assert "stochastic layers of a hierarchical model" in (applies(tmp_path, RunConfig()) or "")
    assert applies(tmp_path, RunConfig().replace(model={"layers": 2})) is None


def _cli_train(out: Path, *extra: str) -> list[str]:
    flags = "--data mnist5k --binarize dynamic --hidden 32 --latent-dim 3 --layers 2 --epochs 6"
    flags += " --batch-size 16 --threads 1 --seed 3 --quiet"
    return [sys.executable, "-m", "vaelab.cli", "train", *flags.split(), "--out", str(out), *extra]


def _metrics(run: Path) -> list[dict]:
    timing = ("seconds", "images_per_second")
    return [
        {k: v for k, v in json.loads(line).items() if k not in timing}
        for line in (run / runs.METRICS).read_text().splitlines()
    ]


@pytest.mark.slow
def test_a_killed_hierarchical_run_resumes_to_exactly_the_uninterrupted_metrics(tmp_path):
    extra = ("--prior", "vamp", "--prior-components", "4", "--free-bits", "0.3", "--kl-warmup-epochs", "3")
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(_cli_train(tmp_path / "straight", *extra), check=True, env=env)
    proc = subprocess.Popen(_cli_train(tmp_path / "killed", *extra), env=env)
    metrics, deadline = tmp_path / "killed" / runs.METRICS, time.time() + 120
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.02)
    time.sleep(0.1)  # into the third epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert runs.run_info(tmp_path / "killed")["status"] == "running"
    resume = [sys.executable, "-m", "vaelab.cli", "train", "--resume", str(tmp_path / "killed"), "--quiet"]
    subprocess.run(resume, check=True, env=env)
    straight = _metrics(tmp_path / "straight")
    assert _metrics(tmp_path / "killed") == straight and "train_kl_layer2_nats" in straight[0]
    assert (tmp_path / "killed" / runs.WEIGHTS).read_bytes() == (
        tmp_path / "straight" / runs.WEIGHTS
    ).read_bytes()
