"""The semi-supervised M2 model and its bound, checked in float64 against exact answers.

- the enumerated bound equals a brute-force sum over classes, each class scored through the
  protocol model `model.given(y)` with the same noise;
- on a linear-Gaussian M2 (linear decoder, Gaussian p(x|y,z) with a fixed sigma) log p(x) =
  log sum_y p(y) N(x; b + w_y, W_z W_z^T + sigma^2 I) in closed form: the protocol's importance-
  sampled log p(x) (proposal q(y|x) q(z|x,y)) matches it, the bounds lie below it;
- the labels-per-class choice is stratified, seeded and refused in one line where it cannot be made.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import MultivariateNormal, kl_divergence

from vaelab.config import DataConfig, ModelConfig, RunConfig
from vaelab.data import load_data
from vaelab.data.labels import UNLABELLED, keep_labels_per_class, labelled_rows
from vaelab.data.splits import Splits
from vaelab.errors import UserError
from vaelab.estimators import log_px_importance
from vaelab.models import build_model
from vaelab.objectives import objective_for
from vaelab.semisupervised import M2, balanced_order, check_labelled_per_batch, classification_error, m2_terms

K, Z, D = 3, 2, 4


def tiny_m2(likelihood: str = "bernoulli", hidden: tuple[int, ...] = (8,), seed: int = 0) -> M2:
    config = ModelConfig(
        kind="m2",
        latent_dim=Z,
        hidden=hidden,
        classes=("a", "b", "c"),
        likelihood=likelihood,
        sigma=0.5,
        activation="tanh",
    )
    torch.manual_seed(seed)
    model = build_model(config, (D,))
    assert isinstance(model, M2)
    return model.double()


def test_enumerated_bound_equals_a_brute_force_sum_over_classes():
    model = tiny_m2()
    x = torch.bernoulli(
        torch.full((5, D), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(1)
    )
    labels = torch.tensor([2, UNLABELLED, 0, UNLABELLED, UNLABELLED])
    terms = m2_terms(model, x, labels, torch.Generator().manual_seed(7))
    # the same noise, eps: (K, B, Z), one z per class and row, drawn class by class here
    eps = torch.randn((K, len(x), Z), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    per_class = []
    for y in range(K):
        given = model.given(torch.full((len(x),), y))
        q = given.posterior(x)
        z = q.base_dist.loc + q.base_dist.scale * eps[y]
        recon = given.likelihood(z).log_prob(x)
        per_class.append(recon - kl_divergence(q, given.prior()) - math.log(K))  # L(x, y)
    bound = torch.stack(per_class)  # (K, B)
    q_y = model.q_y_given_x(x)
    unlabelled = (q_y.probs.T * bound).sum(0) + q_y.entropy()  # U(x) = sum_y q(y|x) L(x, y) + H(q(y|x))
    labelled = bound[labels.clamp(min=0), torch.arange(len(x))]
    expected = torch.where(labels >= 0, labelled, unlabelled)
    torch.testing.assert_close(terms.elbo, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(terms.elbo, terms.log_p_x_given_z - terms.kl, rtol=0, atol=1e-12)
    log_q = q_y.log_prob(labels.clamp(min=0))
    torch.testing.assert_close(terms.log_q_y, torch.where(labels >= 0, log_q, torch.zeros_like(log_q)))


def test_the_objective_adds_alpha_log_q_on_labelled_rows_only():
    model = tiny_m2()
    x = torch.bernoulli(
        torch.full((4, D), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(2)
    )
    labels = torch.tensor([1, UNLABELLED, UNLABELLED, UNLABELLED])
    out = objective_for(model, "elbo")(model, x, torch.Generator().manual_seed(3), labels=labels)
    terms = m2_terms(model, x, labels, torch.Generator().manual_seed(3))
    # alpha per labelled row is alpha * B / B_labelled: the batch mean gains alpha * mean log q(y|x)
    expected = terms.elbo + model.alpha * 4 / 1 * terms.log_q_y
    torch.testing.assert_close(out.surrogate, expected, rtol=0, atol=1e-12)
    assert out.bound is not None
    torch.testing.assert_close(out.bound, terms.elbo, rtol=0, atol=0)


def test_a_balanced_batch_mean_weights_each_term_as_documented():
    # B = 5 rows, B_l = 2 labelled: the batch mean of the surrogate is
    # (B_u / B) E_u[U(x)] + (B_l / B) E_l[L(x, y)] + alpha E_l[log q(y|x)], exactly
    model = tiny_m2()
    model.alpha = 2.5
    x = torch.bernoulli(
        torch.full((5, D), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(4)
    )
    labels = torch.tensor([UNLABELLED, 2, UNLABELLED, 0, UNLABELLED])
    out = objective_for(model, "elbo")(model, x, torch.Generator().manual_seed(5), labels=labels)
    terms = m2_terms(model, x, labels, torch.Generator().manual_seed(5))
    rows = labels >= 0
    expected = (
        3 / 5 * terms.elbo[~rows].mean() + 2 / 5 * terms.elbo[rows].mean() + 2.5 * terms.log_q_y[rows].mean()
    )
    torch.testing.assert_close(out.surrogate.mean(), expected, rtol=0, atol=1e-12)


def linear_gaussian_log_px(model: M2, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log sum_y (1/K) N(x; b + W_y, W_z W_z^T + sigma^2 I), x: (B, D) -> (B,)."""
    linear = model.decoder[0]
    assert isinstance(linear, torch.nn.Linear)
    w, b = linear.weight, linear.bias  # (D, K + Z), (D,)
    w_y, w_z = w[:, :K], w[:, K:]
    sigma2 = model.likelihood_head.log_scale.exp() ** 2  # (D,)
    cov = w_z @ w_z.T + torch.diag(sigma2)
    log_p_x_given_y = torch.stack(
        [MultivariateNormal(b + w_y[:, y], cov).log_prob(x) for y in range(K)]
    )  # (K, B)
    return torch.logsumexp(log_p_x_given_y - math.log(K), dim=0)


def linear_gaussian_log_p_x_given_y(model: M2, x: torch.Tensor, y: int) -> torch.Tensor:
    w, b = model.decoder[0].weight, model.decoder[0].bias
    cov = w[:, K:] @ w[:, K:].T + torch.diag(model.likelihood_head.log_scale.exp() ** 2)
    return MultivariateNormal(b + w[:, y], cov).log_prob(x)


def test_importance_sampled_log_px_matches_the_exact_sum_over_classes():
    model = tiny_m2("gaussian", hidden=())
    with torch.no_grad():  # decoder columns of the classes apart, so the classes matter
        model.decoder[0].weight[:, :K] = torch.tensor(
            [[2.0, -1.0, 0.0], [0.0, 2.0, -2.0], [1.0, 0.0, 2.0], [-1.0, 1.0, 1.0]]
        )
    x = torch.tensor(
        [[2.0, 0.1, 1.0, -1.0], [-1.0, 2.0, 0.0, 1.0], [0.3, -0.2, 0.5, 0.0]], dtype=torch.float64
    )
    exact = linear_gaussian_log_px(model, x)
    estimate = log_px_importance(model, x, 20000, generator=torch.Generator().manual_seed(0))
    tolerance = 3 * estimate.stderr + 1e-3
    assert ((estimate.value - exact).abs() < tolerance).all(), (estimate.value, exact, estimate.stderr)
    # log p(x|y) through model.given(y), the protocol model for fixed labels
    given = log_px_importance(
        model.given(torch.full((3,), 1)), x, 20000, generator=torch.Generator().manual_seed(1)
    )
    exact_given = linear_gaussian_log_p_x_given_y(model, x, 1)
    assert ((given.value - exact_given).abs() < 3 * given.stderr + 1e-3).all()


def test_the_bounds_lie_below_log_px_and_log_pxy():
    model = tiny_m2("gaussian", hidden=())
    x = torch.tensor([[1.0, 0.5, -0.5, 0.2], [-0.3, 0.8, 0.1, -1.2]], dtype=torch.float64)
    repeats = 4000  # the bound's expectation, by averaging its one-sample estimate
    xs = x.repeat(repeats, 1)
    unlabelled = m2_terms(model, xs, None, torch.Generator().manual_seed(0)).elbo.view(repeats, 2)
    labels = torch.full((len(xs),), 2)
    labelled = m2_terms(model, xs, labels, torch.Generator().manual_seed(1)).elbo.view(repeats, 2)
    for bound, exact in (
        (unlabelled, linear_gaussian_log_px(model, x)),
        (labelled, linear_gaussian_log_p_x_given_y(model, x, 2) - math.log(K)),
    ):
        mean, stderr = bound.mean(0), bound.std(0) / math.sqrt(repeats)
        assert (mean < exact + 3 * stderr).all(), (mean, exact)
        assert (mean > exact - 50).all()  # (a bound, not a broken number)


def test_classification_error_and_its_standard_error():
    model = tiny_m2()
    x = torch.rand(50, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    predicted = model.classify(x)
    y = predicted.clone()
    y[:10] = (y[:10] + 1) % K  # 10 of 50 wrong
    y[10:20] = UNLABELLED  # left out
    result = classification_error(model, x, y)
    assert result.num_examples == 40
    assert result.percent == pytest.approx(25.0)
    assert result.stderr_percent == pytest.approx(100 * math.sqrt(0.25 * 0.75 / 40))


# ------------------------------------------------------------------------ labels per class


def labelled_splits(per_class_counts=(6, 5, 7)) -> Splits:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class_counts)])
    x = torch.zeros(len(y), 2)
    return Splits("toy", x, x[:3], x[:3], y, y[:3], y[:3])


def test_labels_per_class_is_stratified_and_seeded():
    splits = labelled_splits()
    kept = keep_labels_per_class(splits, 4, seed=0, where="toy").train_labels
    assert kept is not None and splits.train_labels is not None
    assert torch.bincount(kept[kept >= 0]).tolist() == [4, 4, 4]
    rows = kept >= 0
    assert torch.equal(kept[rows], splits.train_labels[rows])  # the kept labels are the true ones
    again = keep_labels_per_class(splits, 4, seed=0, where="toy").train_labels
    other = keep_labels_per_class(splits, 4, seed=1, where="toy").train_labels
    assert torch.equal(kept, again)
    assert not torch.equal(kept, other)
    assert labelled_rows(splits.train_labels, 4, 0).tolist() == torch.nonzero(rows).flatten().tolist()
    assert keep_labels_per_class(splits, None, seed=0, where="toy") is splits


def test_labels_per_class_through_the_data_config():
    splits = load_data(DataConfig(source="digits", labels_per_class=3, labels_seed=5))
    y = splits.train_labels
    assert y is not None
    assert torch.bincount(y[y >= 0]).tolist() == [3] * 10
    assert int((y == UNLABELLED).sum()) == len(y) - 30
    assert splits.test_labels is not None and bool((splits.test_labels >= 0).all())


def test_labels_per_class_refuses_in_one_line(tmp_path):
    with pytest.raises(UserError, match=r"data.labels_per_class 7: class 1 has only 5 labelled train rows"):
        keep_labels_per_class(labelled_splits(), 7, seed=0, where="toy")
    import numpy as np

    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).random((30, 3)).astype(np.float32))
    with pytest.raises(UserError, match=r"x.npy: data.labels_per_class: the train split has no labels"):
        load_data(DataConfig(source=f"npy:{path}", labels_per_class=1))


# --------------------------------------------------------------------- labelled batches


def test_every_balanced_batch_carries_its_labelled_rows():
    labels = torch.full((53,), UNLABELLED)
    labels[[3, 9, 20, 41]] = torch.tensor([0, 1, 1, 2])
    order = balanced_order(labels, 10, 3, torch.Generator().manual_seed(0))
    # 49 unlabelled rows in batches of 7 beside 3 labelled ones: 7 batches of 10 rows
    assert len(order) == 49 + 7 * 3
    batches = order.split(10)
    assert [int((labels[rows] >= 0).sum()) for rows in batches] == [3] * 7
    unlabelled = order[labels[order] < 0]
    assert sorted(unlabelled.tolist()) == torch.nonzero(labels < 0).flatten().tolist()  # each once
    # 21 labelled draws cycle through the 4 labelled rows: each drawn 5 or 6 times
    counts = torch.bincount(order[labels[order] >= 0], minlength=53)[[3, 9, 20, 41]]
    assert counts.sum() == 21 and set(counts.tolist()) <= {5, 6}
    again = balanced_order(labels, 10, 3, torch.Generator().manual_seed(0))
    assert torch.equal(order, again)
    assert not torch.equal(order, balanced_order(labels, 10, 3, torch.Generator().manual_seed(1)))


@settings(max_examples=40, deadline=None)
@given(
    labelled=st.lists(st.booleans(), min_size=2, max_size=80),
    batch_size=st.integers(2, 17),
    per_batch=st.integers(1, 16),
    seed=st.integers(0, 2**31),
)
def test_balanced_batches_for_any_labels(labelled, batch_size, per_batch, seed):
    labels = torch.tensor([0 if row else UNLABELLED for row in labelled])
    per_batch = min(per_batch, batch_size - 1)
    order = balanced_order(labels, batch_size, per_batch, torch.Generator().manual_seed(seed))
    n_labelled = int((labels >= 0).sum())
    if n_labelled in (0, len(labels)):
        assert sorted(order.tolist()) == list(range(len(labels)))
        return
    batches = order.split(batch_size)
    assert len(batches) == math.ceil((len(labels) - n_labelled) / (batch_size - per_batch))
    assert all(int((labels[rows] >= 0).sum()) == per_batch for rows in batches)
    assert sorted(order[labels[order] < 0].tolist()) == torch.nonzero(labels < 0).flatten().tolist()
    counts = torch.bincount(order, minlength=len(labels))[labels >= 0]
    assert int(counts.max() - counts.min()) <= 1  # the labelled rows cycle evenly


def test_balanced_order_is_a_plain_permutation_without_two_kinds_of_rows():
    mixed = torch.tensor([UNLABELLED, 1, UNLABELLED, 0, UNLABELLED, UNLABELLED])
    for labels, per_batch in ((mixed, 0), (torch.tensor([0, 1, 2, 1, 0, 2]), 2), (torch.full((6,), -1), 2)):
        order = balanced_order(labels, 4, per_batch, torch.Generator().manual_seed(3))
        assert torch.equal(order, torch.randperm(6, generator=torch.Generator().manual_seed(3)))


def test_labelled_per_batch_must_leave_unlabelled_rows():
    config = RunConfig().replace(model={"kind": "m2", "labelled_per_batch": 64}, train={"batch_size": 64})
    with pytest.raises(
        UserError,
        match=r"model.labelled_per_batch 64: leaves no unlabelled row in a batch of train.batch_size 64",
    ):
        check_labelled_per_batch(config)
    check_labelled_per_batch(config.replace(model={"labelled_per_batch": 63}))
    check_labelled_per_batch(config.replace(model={"kind": "vae", "labelled_per_batch": 0}))


def test_the_trainer_gives_every_batch_its_labelled_rows(tmp_path, monkeypatch):
    import vaelab.objectives
    from vaelab.train import train

    seen: list[torch.Tensor] = []
    objective = vaelab.objectives.semi_supervised

    def spy(model, x, generator=None, **options):
        if options["labels"] is not None:  # (validation scores log p(x): no labels)
            seen.append(options["labels"].clone())
        return objective(model, x, generator, **options)

    monkeypatch.setattr(vaelab.objectives, "semi_supervised", spy)
    config = RunConfig().replace(
        data={"source": "digits", "labels_per_class": 2},
        model={"kind": "m2", "hidden": (8,), "latent_dim": 2, "labelled_per_batch": 4},
        train={"epochs": 1, "threads": 1, "compile": "off", "batch_size": 64},
    )
    train(config, tmp_path / "run", progress=False)
    assert len(seen) > 1 and [int((y >= 0).sum()) for y in seen] == [4] * len(seen)
    assert sum(int((y < 0).sum()) for y in seen) == int((load_data(config.data).train_labels < 0).sum())


def test_an_m2_run_with_labelled_batches_resumes_exactly(tmp_path):
    import json

    from vaelab import runs
    from vaelab.train import Trainer, train

    config = RunConfig().replace(
        data={"source": "digits", "labels_per_class": 3},
        model={"kind": "m2", "hidden": (8,), "latent_dim": 2, "labelled_per_batch": 5, "dropout": 0.2},
        train={"epochs": 2, "threads": 1, "compile": "off", "batch_size": 64},
    )
    train(config, tmp_path / "straight", progress=False)
    stopped = Trainer(config, tmp_path / "resumed", progress=False)
    stopped.run_epoch()
    stopped.close()  # the process "dies": the next Trainer starts from the epoch-1 checkpoint
    train(config, tmp_path / "resumed", resume=True, progress=False)

    def metrics(run):
        drop = ("seconds", "images_per_second")
        lines = (run / runs.METRICS).read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]

    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "straight")
    assert (tmp_path / "resumed" / runs.WEIGHTS).read_bytes() == (
        tmp_path / "straight" / runs.WEIGHTS
    ).read_bytes()


def test_m2_refuses_what_it_does_not_have():
    with pytest.raises(UserError, match=r"model.net conv: the m2 model has a mlp net only"):
        build_model(ModelConfig(kind="m2", net="conv", classes=("a", "b", "c")), (1, 8, 8))
    with pytest.raises(
        UserError, match=r"model.classes: the m2 model needs its classes \(resolved from the data\)"
    ):
        build_model(ModelConfig(kind="m2"), (4,))
    config = RunConfig().replace(model={"kind": "m2"}, objective={"name": "iwae", "k": 5})
    assert sorted(config.ignored_settings({"objective.name", "objective.k", "model.alpha"})) == [
        "objective.k: ignored (the m2 model trains on its own bound, one z per class)",
        "objective.name: ignored (the m2 model trains on its own bound, one z per class)",
    ]
    assert RunConfig().ignored_settings({"model.alpha", "data.labels_seed"}) == [
        "data.labels_seed: ignored (it applies with labels_per_class)",
        "model.alpha: ignored (it applies to the m2 model)",
    ]


# ------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_m2_and_m1_m2_train_evaluate_and_classify(tmp_path):
    import vaelab
    from vaelab import runs
    from vaelab.evaluate import evaluate_run
    from vaelab.train import train

    small = {"hidden": (16,), "latent_dim": 2}
    options = {"epochs": 2, "threads": 1, "compile": "off", "batch_size": 64}
    m1 = train(
        RunConfig().replace(data={"source": "digits"}, model=small, train=options),
        tmp_path / "m1",
        progress=False,
    )
    labels = {"labels_per_class": 5, "labels_seed": 3}
    for name, source in (("m2", "digits"), ("m1m2", f"codes:{m1.run_dir}")):
        config = RunConfig().replace(
            data={"source": source, **labels}, model={"kind": "m2", **small}, train=options
        )
        run = train(config, tmp_path / name, progress=False).run_dir
        stored = runs.read_config(run)
        assert (stored.data.labels_per_class, stored.data.labels_seed, stored.model.classes) == (
            5,
            3,
            tuple("0123456789"),
        )
        record = runs.read_metrics(run)[-1]
        assert 0 <= record["train_error_percent"] <= 100 and 0 <= record["valid_error_percent"] <= 100
        assert record["train_classification_loss_nats"] > 0
        result = evaluate_run(run, k=4, progress=False)
        assert (
            result.classification is not None and result.classification["num_examples"] == result.num_examples
        )
        assert result.log_px is not None and result.elbo is not None
        assert runs.read_evaluation(run / "eval.json")["classification"] == result.classification
        model = vaelab.load(run)
        splits = load_data(stored.data)
        wrong = (model.classify(splits.inputs("test")) != splits.test_labels).double().mean()
        assert float(100 * wrong) == pytest.approx(result.classification["percent"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "m2", "--labels-per-class", "1000"], "data.labels_per_class 1000: class 8 has only 139"),
        (["--labels-seed", "3"], "--labels-seed: ignored (it applies with labels_per_class)"),
        (["--model", "m2", "--objective", "iwae"], "--objective: ignored (the m2 model trains on its own"),
        (["--alpha", "0.5"], "--alpha: ignored (it applies to the m2 model)"),
        (["--labelled-per-batch", "5"], "--labelled-per-batch: ignored (it applies to the m2 model)"),
        (
            ["--model", "m2", "--labels-per-class", "2", "--labelled-per-batch", "128"],
            "model.labelled_per_batch 128: leaves no unlabelled row in a batch of train.batch_size 128",
        ),
    ],
)
def test_the_cli_refuses_in_one_line(tmp_path, capsys, argv, message):
    from vaelab.cli import main

    code = main(["train", "--data", "digits", "--out", str(tmp_path / "run"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()
