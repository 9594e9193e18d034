"""Training: a step changes the weights, early stopping, divergence, and exact kill-and-resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.errors import UserError
from vaelab.models import build_model
from vaelab.objectives import objective_for
from vaelab.train import train

SMALL = RunConfig().replace(
    data={"source": "digits"}, model={"hidden": (32,), "latent_dim": 2}, train={"epochs": 3, "batch_size": 64}
)


def test_one_step_changes_every_parameter():
    torch.manual_seed(0)
    model = build_model(SMALL.model, (1, 8, 8))
    before = {k: v.clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = -objective_for(model, "elbo")(model, torch.rand(16, 1, 8, 8), torch.Generator()).surrogate.mean()
    loss.backward()
    optimizer.step()
    for name, value in model.named_parameters():
        assert not torch.equal(value, before[name]), name


def test_training_improves_the_validation_elbo_and_ae_trains_too(tmp_path):
    result = train(SMALL.replace(train={"epochs": 4}), tmp_path / "vae", progress=False)
    history = runs.read_metrics(tmp_path / "vae")
    assert history[-1]["valid_elbo_nats"] > history[0]["valid_elbo_nats"]
    assert result.best_valid_bound == max(r["valid_elbo_nats"] for r in history)
    assert result.bound == "ELBO" and all(r["valid_bound_nats"] == r["valid_elbo_nats"] for r in history)
    train(SMALL.replace(model={"kind": "ae"}), tmp_path / "ae", progress=False)
    # regression: an AE logged its reconstruction term as "ELBO" and a KL of 0; it has neither
    lines = (tmp_path / "ae" / runs.METRICS).read_text().splitlines()
    for record in map(json.loads, lines):
        assert not [key for key in record if "elbo" in key or "kl" in key], record
        assert record["bound"] == "reconstruction"
        assert record["valid_bound_nats"] == record["valid_log_p_x_given_z_nats"]


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    config = SMALL.replace(train={"epochs": 50, "patience": 1, "lr": 0.05})
    result = train(config, tmp_path / "run", progress=False)
    history = runs.read_metrics(tmp_path / "run")
    assert result.stopped_early and len(history) < 50
    assert history[-1]["valid_elbo_nats"] <= result.best_valid_bound


def test_divergence_is_reported_not_saved_as_nan(tmp_path):
    config = SMALL.replace(model={"likelihood": "gaussian", "sigma": 1e-4}, train={"lr": 1e6, "epochs": 2})
    with pytest.raises(UserError, match="diverged"):
        train(config, tmp_path / "run", progress=False)


def test_gaussian_learned_sigma_and_conv_net_train(tmp_path):
    config = SMALL.replace(
        model={"likelihood": "gaussian", "sigma": None, "net": "conv"}, train={"epochs": 1}
    )
    train(config, tmp_path / "run", progress=False)
    assert "likelihood_head.log_scale" in dict(build_model(config.model, (1, 8, 8)).named_parameters())


def _cli_train(out, *extra):
    return [
        sys.executable,
        "-m",
        "vaelab.cli",
        "train",
        "--data",
        "mnist5k",
        "--binarize",
        "dynamic",
        "--hidden",
        "64",
        "--latent-dim",
        "4",
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--threads",
        "1",
        "--seed",
        "3",
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


def _metrics(run):
    keep = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}  # noqa: E731
    return [keep(json.loads(line)) for line in (run / runs.METRICS).read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("--ema", "0.9", "--lr-schedule", "plateau", "--lr-patience", "1", "--objective", "iwae", "--k", "2"),
        ("--dropout", "0.3"),
        ("--condition", "label", "--prior", "vamp", "--prior-components", "4"),
    ],
    ids=["plain", "averaged-plateau-iwae", "dropout", "conditional"],
)
def test_kill_and_resume_gives_exactly_the_uninterrupted_metrics(tmp_path, extra):
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(_cli_train(tmp_path / "straight", *extra), check=True, env=env)
    proc = subprocess.Popen(_cli_train(tmp_path / "killed", *extra), env=env)
    deadline = time.time() + 120
    metrics = tmp_path / "killed" / runs.METRICS
    while time.time() < deadline and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.02)
    time.sleep(0.1)  # into the third epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert runs.run_info(tmp_path / "killed")["status"] == "running"
    assert len(_metrics(tmp_path / "killed")) < 6
    subprocess.run(
        [sys.executable, "-m", "vaelab.cli", "train", "--resume", str(tmp_path / "killed"), "--quiet"],
        check=True,
        env=env,
    )
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "straight")
    assert (tmp_path / "killed" / runs.WEIGHTS).read_bytes() == (
        tmp_path / "straight" / runs.WEIGHTS
    ).read_bytes()


def test_kl_warmup_and_cosine_schedule():
    from vaelab.train import kl_weight, learning_rate

    config = SMALL.replace(
        objective={"kl_warmup_epochs": 2, "beta": 1.0}, train={"epochs": 5, "lr_schedule": "cosine"}
    )
    assert kl_weight(config, 1, 0, 10) == pytest.approx(0.05)
    assert kl_weight(config, 1, 9, 10) == pytest.approx(0.5)
    assert kl_weight(config, 3, 0, 10) == 1.0
    assert learning_rate(config, 1) == pytest.approx(1e-3)
    assert learning_rate(config, 5) == pytest.approx(1e-5)
    assert learning_rate(config, 3) == pytest.approx((1e-3 + 1e-5) / 2)


def test_bf16_training_tracks_fp32(tmp_path):
    base = SMALL.replace(train={"epochs": 2})
    fp32 = train(base, tmp_path / "fp32", progress=False)
    bf16 = train(base.replace(train={"precision": "bf16"}), tmp_path / "bf16", progress=False)
    # bf16 rounds each product's inputs to 8 bits of mantissa; after two epochs on digits the bound
    # moves by far less than it improved over those epochs
    assert abs(bf16.best_valid_bound - fp32.best_valid_bound) < 1.0


def test_time_budget_stops_training(tmp_path):
    result = train(SMALL.replace(train={"epochs": 1000, "minutes": 1e-6}), tmp_path / "run", progress=False)
    assert result.epochs == 1


def test_recipe_ingredients_train_together(tmp_path):
    config = SMALL.replace(
        model={"net": "gated", "prior": "vamp", "prior_components": 5},
        objective={"name": "iwae", "k": 3, "kl_warmup_epochs": 1},
        train={"epochs": 2, "weight_decay": 1e-4, "precision": "bf16"},
    )
    result = train(config, tmp_path / "run", progress=False)
    assert math.isfinite(result.best_valid_bound)


def test_averaged_model_is_the_exponential_moving_average_of_the_steps():
    from vaelab.train import averaged_model

    model = build_model(SMALL.model, (1, 8, 8)).double()
    averaged = averaged_model(model, 0.9)
    name, param = next(iter(model.named_parameters()))
    values = [torch.full_like(param, v) for v in (1.0, 2.0, 4.0)]
    for value in values:
        with torch.no_grad():
            param.copy_(value)
        averaged.update_parameters(model)
    expected = 0.9 * (0.9 * values[0] + 0.1 * values[1]) + 0.1 * values[2]  # the first update copies
    torch.testing.assert_close(dict(averaged.module.named_parameters())[name], expected, rtol=0, atol=1e-15)
    assert averaged_model(model, 0.0) is None


def test_selection_uses_the_averaged_weights_and_the_objectives_bound(tmp_path):
    from vaelab.train import VALID_SEED_OFFSET, dataset_terms

    config = SMALL.replace(objective={"name": "iwae", "k": 3}, train={"epochs": 3, "ema": 0.95})
    result = train(config, tmp_path / "run", progress=False)
    history = runs.read_metrics(tmp_path / "run")
    assert result.bound == "IWAE k=3" and all(r["bound"] == "IWAE k=3" for r in history)
    best = runs.best_record(history)
    assert result.best_epoch == best["epoch"] and result.best_valid_bound == best["valid_bound_nats"]
    model = runs.load_model(tmp_path / "run")  # model.safetensors: the averaged weights at the best epoch
    valid = _digits_valid()
    again = dataset_terms(model, valid, seed=config.train.seed + VALID_SEED_OFFSET, objective="iwae", k=3)
    assert again.bound == pytest.approx(best["valid_bound_nats"], abs=1e-9)
    raw = build_model(config.model, (1, 8, 8))
    state = runs.load_state(tmp_path / "run" / runs.STATE)
    runs.load_weights(tmp_path / "run" / state["weights"], raw)
    assert any(not torch.equal(a, b) for a, b in zip(raw.parameters(), model.parameters(), strict=True))


def _digits_valid():
    from vaelab.data import load_data

    return load_data(SMALL.data).valid


def test_plateau_schedule_halves_the_rate_after_lr_patience_bad_epochs(tmp_path):
    config = SMALL.replace(train={"epochs": 12, "lr": 0.05, "lr_schedule": "plateau", "lr_patience": 2})
    train(config, tmp_path / "run", progress=False)
    history = runs.read_metrics(tmp_path / "run")
    best, bad, lr = -math.inf, 0, config.train.lr
    for record in history:
        assert record["lr"] == pytest.approx(lr), record["epoch"]
        if record["valid_bound_nats"] > best:
            best, bad = record["valid_bound_nats"], 0
        else:
            bad += 1
            if bad == 2:
                lr, bad = max(lr / 2, config.train.lr / 100), 0
    assert history[-1]["lr"] < config.train.lr  # lr 0.05 overshoots on digits: the rate did drop
