"""Tabular data: csv names and missing values, standardization with its Jacobian, the mixed
likelihood, the data-dependent defaults, rows out in the user's units, and the factor-analysis
check of the reported log-likelihood against the exact one."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from vaelab.columns import MixedColumns
from vaelab.config import DataConfig, RunConfig
from vaelab.data import load_data
from vaelab.data.tables import binary_columns, read_csv
from vaelab.data.transforms import Standardize, Transform
from vaelab.errors import UserError
from vaelab.limits import Limits
from vaelab.tabular import resolve, write_rows

# ------------------------------------------------------------------------------------ csv


def test_csv_keeps_header_names_and_numbers_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("\ufeffheight, weight,,flag\n1.5,60,3,0\n\n1.7,70,4,1\n")
    table = read_csv(path, Limits())
    assert table.names == ("height", "weight", "x3", "flag")
    assert table.values.tolist() == [[1.5, 60.0, 3.0, 0.0], [1.7000000476837158, 70.0, 4.0, 1.0]]


@pytest.mark.parametrize(
    "text, match",
    [
        ("a,b\n1,2\n3,\n", r"line 3 \(data row 2\), column 2 \('b'\): missing value \(empty cell\)"),
        ("a,b\n1,NA\n", r"line 2 \(data row 1\), column 2 \('b'\): missing value \(NA\)"),
        ("1,2\nnan,4\n", r"line 2 \(data row 2\), column 1: missing value \(nan\); data.drop_missing"),
        ("a,a\n1,2\n", r"header: columns 1 and 2 are both named 'a'"),
        ("a,b\n1,x\n", r"line 2 \(data row 1\), column 2 \('b'\): non-numeric cell 'x'"),
        ("a,b\n1,?\n", r"every one of the 1 data rows has a missing value"),
    ],
)
def test_csv_refuses_missing_values_naming_row_and_column(tmp_path, text, match):
    path = tmp_path / "t.csv"
    path.write_text(text)
    drop = "every one" in match
    with pytest.raises(UserError, match=match):
        read_csv(path, Limits(), drop_missing=drop)


def test_drop_missing_leaves_out_the_rows_and_says_which(tmp_path, caplog):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,\n5,6\nNaN,8\n9,10\n")
    with caplog.at_level(logging.WARNING):
        table = read_csv(path, Limits(), drop_missing=True)
    assert table.values.tolist() == [[1, 2], [5, 6], [9, 10]] and table.dropped_lines == (3, 5)
    assert "dropped 2 rows with a missing value (lines 3, 5)" in caplog.text


def test_drop_missing_is_refused_for_other_data(parse_train):
    with pytest.raises(UserError, match=r"--drop-missing: ignored \(it applies to csv data\)"):
        parse_train("--data", "mnist5k", "--drop-missing")


# -------------------------------------------------------------------------- standardize


def test_standardize_maps_columns_and_carries_minus_sum_log_scale():
    step = Standardize((1.0, -2.0, 0.0), (2.0, 1000.0, 1.0))
    x = torch.tensor([[3.0, 998.0, 1.0], [1.0, -2.0, 0.0]])
    y = Transform((step,))(x)
    assert torch.equal(y, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert torch.equal(Transform((step,)).inverse(y), x)
    assert Transform((step,)).log_det_nats((3,)) == pytest.approx(
        -math.log(2.0) - math.log(1000.0), rel=1e-15
    )


def test_standardized_density_is_the_data_density_exactly():
    """A Gaussian density of y = (x - m) / s plus log_det is the density of x, in float64."""
    m, s = torch.tensor([3.0, -1.0], dtype=torch.float64), torch.tensor([0.5, 40.0], dtype=torch.float64)
    x = torch.tensor([[3.3, 20.0], [2.0, -100.0]], dtype=torch.float64)
    step = Standardize(tuple(m.tolist()), tuple(s.tolist()))
    log_p_y = torch.distributions.Normal(0.0, 1.0).log_prob((x - m) / s).sum(-1)
    log_p_x = torch.distributions.Normal(m, s).log_prob(x).sum(-1)
    assert torch.allclose(log_p_y + step.log_det_nats((2,)), log_p_x, rtol=0, atol=1e-12)


def _table(tmp_path, rows: np.ndarray, header: str = "") -> str:
    path = tmp_path / "t.csv"
    lines = ([header] if header else []) + [",".join(repr(float(v)) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return f"csv:{path}"


def test_load_data_standardizes_tabular_data_with_the_train_split_and_leaves_bits_alone(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.normal(5, 3, 200), rng.integers(0, 2, 200), rng.normal(0, 1e4, 200)])
    splits = load_data(DataConfig(source=_table(tmp_path, rows, "a,bit,c")))
    assert splits.column_names == ("a", "bit", "c")
    (step,) = splits.transform.steps
    assert isinstance(step, Standardize)
    train = splits.train.double()
    assert step.mean[1] == 0.0 and step.scale[1] == 1.0
    assert step.mean[0] == pytest.approx(float(train[:, 0].mean()), rel=1e-12)
    assert step.scale[2] == pytest.approx(float(train[:, 2].std(correction=0)), rel=1e-12)
    assert torch.equal(splits.inputs("test")[:, 1], splits.test[:, 1])
    assert splits.log_det_nats() == pytest.approx(-math.log(step.scale[0]) - math.log(step.scale[2]))
    off = load_data(DataConfig(source=_table(tmp_path, rows), standardize="off"))
    assert off.transform.steps == () and off.column_names == ("x1", "x2", "x3")


def test_standardize_refuses_images_and_constant_columns(tmp_path, tiny_npz):
    with pytest.raises(UserError, match=r"data.standardize on: applies to tabular data"):
        load_data(DataConfig(source=f"npz:{tiny_npz}", standardize="on"))
    rows = np.column_stack([np.arange(30.0), np.full(30, 7.0)])
    with pytest.raises(UserError, match=r"column 2 \('x2'\) is constant \(7\) in the train split"):
        load_data(DataConfig(source=_table(tmp_path, rows)))


# ---------------------------------------------------------------------------- likelihood


def test_mixed_columns_log_prob_is_bernoulli_plus_gaussian_in_float64():
    out = torch.tensor([[0.3, -1.2, 2.0], [1.5, 0.0, -0.7]], dtype=torch.float64)
    scale = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    bits = torch.tensor([True, False, True])
    x = torch.tensor([[1.0, 0.4, 0.0], [0.0, -3.0, 1.0]], dtype=torch.float64)
    p = MixedColumns(out, scale, bits)
    expected = torch.distributions.Bernoulli(logits=out[:, [0, 2]]).log_prob(x[:, [0, 2]]).sum(
        -1
    ) + torch.distributions.Normal(out[:, 1], scale[1]).log_prob(x[:, 1])
    assert torch.allclose(p.log_prob(x), expected, rtol=0, atol=1e-12)
    assert torch.allclose(p.mean[:, 0], torch.sigmoid(out[:, 0])) and torch.equal(p.mean[:, 1], out[:, 1])
    draws = p.sample((4000,), torch.Generator().manual_seed(0))
    assert draws.shape == (4000, 2, 3) and set(draws[..., 0].unique().tolist()) == {0.0, 1.0}
    assert abs(float(draws[:, 0, 1].std()) - 0.5) < 0.03


@pytest.mark.parametrize(
    "columns, likelihood, sigma, standardize",
    [
        ("normal", "gaussian", None, "on"),
        ("bits", "bernoulli", 0.1, "off"),
        ("both", "mixed", None, "on"),
    ],
)
def test_auto_settings_resolve_from_the_columns(tmp_path, columns, likelihood, sigma, standardize):
    rng = np.random.default_rng(1)
    normal, bits = rng.normal(size=(100, 2)), rng.integers(0, 2, (100, 2)).astype(float)
    rows = {"normal": normal, "bits": bits, "both": np.hstack([normal, bits])}[columns]
    config = RunConfig().replace(data={"source": _table(tmp_path, rows)})
    resolved, splits = resolve(config, load_data(config.data))
    assert (resolved.model.likelihood, resolved.model.sigma, resolved.data.standardize) == (
        likelihood,
        sigma,
        standardize,
    )
    step = splits.transform.steps[0] if splits.transform.steps else None
    assert resolved.data.standardize_mean == (None if step is None else step.mean)
    assert resolve(resolved, load_data(resolved.data))[0] == resolved  # resolving is idempotent
    assert binary_columns(splits) == tuple(bool(np.isin(column, (0, 1)).all()) for column in rows.T)


def test_a_run_from_before_standardization_reads_as_standardize_off(tmp_path):
    from vaelab import runs

    config = RunConfig().replace(data={"source": "csv:t.csv"}).to_dict()
    del config["data"]["standardize"], config["data"]["standardize_mean"], config["data"]["standardize_scale"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert runs.read_config(tmp_path).data.standardize == "off"


def test_sigma_is_refused_where_auto_resolves_to_bernoulli(tiny_npz):
    config = RunConfig().replace(data={"source": f"npz:{tiny_npz}"}, model={"sigma": 0.5})
    with pytest.raises(
        UserError, match=r"model.sigma: ignored \(likelihood auto is bernoulli for these data"
    ):
        resolve(config, load_data(config.data))


def test_auto_settings_of_images_are_as_before_and_mixed_is_refused(tiny_npz):
    config = RunConfig().replace(data={"source": f"npz:{tiny_npz}"})
    resolved, _ = resolve(config, load_data(config.data))
    assert (resolved.model.likelihood, resolved.model.sigma, resolved.data.standardize) == (
        "bernoulli",
        0.1,
        "off",
    )
    mixed = config.replace(model={"likelihood": "mixed"})
    with pytest.raises(UserError, match=r"model.likelihood mixed: applies to tabular data"):
        resolve(mixed, load_data(mixed.data))


def test_write_rows_round_trips_float32_with_the_names(tmp_path):
    rows = torch.tensor([[0.1, -2.5e-8, 1e30], [3.0, 4.0, 5.0]])
    path = write_rows(tmp_path / "r.csv", rows, ("a", "b,c", "d"))
    lines = path.read_text().splitlines()
    assert lines[0] == 'a,"b,c",d' and lines[1] == "0.1,-2.5e-08,1e+30"
    assert np.array_equal(
        np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float32)[:, [0, 2]], rows[:, [0, 2]]
    )
    assert np.array_equal(np.load(write_rows(tmp_path / "r.npy", rows, ("a", "b", "c"))), rows.numpy())
    with pytest.raises(UserError, match=r"rows are written as .csv or .npy, not .txt"):
        write_rows(tmp_path / "r.txt", rows, ("a", "b", "c"))


# ------------------------------------------------------------------- factor analysis, end to end

FA_MARGIN_NATS = 0.1
"""How close the linear VAE's test log p(x) must come to the exact factor-analysis log-likelihood,
nats per row (measured: within 0.02 at this budget; the Jacobian it includes is ~ -15 nats)."""


@pytest.fixture(scope="module")
def fa_run(tmp_path_factory):
    """A linear VAE (Z = 2, learned sigma per column, standardized) trained on 3000 rows of a
    factor-analysis model whose columns' units span 1e-3 .. 1e6 (benchmarks/tabular.py), and the
    exact test log-likelihood; one thread (a model this small only loses to thread hand-offs)."""
    from benchmarks.tabular import (
        exact_log_likelihood,
        factor_analysis,
        linear_vae_config,
        sample_rows,
        write_csv,
    )

    from vaelab.train import train

    base = tmp_path_factory.mktemp("fa")
    w, mu, psi = factor_analysis()
    csv = base / "fa.csv"
    write_csv(csv, sample_rows(w, mu, psi, 3000, seed=1))
    threads = torch.get_num_threads()
    try:
        run = train(linear_vae_config(csv, epochs=30), base / "run", progress=False).run_dir
    finally:
        torch.set_num_threads(threads)
    splits = load_data(RunConfig.from_dict(json.loads((run / "config.json").read_text())).data)
    exact = float(exact_log_likelihood(splits.test.double().numpy(), w, mu, psi).mean())
    return run, csv, exact


@pytest.mark.slow  # (the fixture trains for ~5 s of CPU)
def test_linear_vae_meets_the_exact_factor_analysis_likelihood_in_the_data_units(fa_run):
    from vaelab.evaluate import evaluate_run

    run, _, exact = fa_run
    e = evaluate_run(run, k=200, progress=False)
    assert e.log_px is not None and e.elbo is not None
    assert abs(e.log_px - exact) < FA_MARGIN_NATS, (e.log_px, exact)
    assert e.elbo <= e.log_px + 3 * (e.log_px_stderr or 0)
    assert e.log_det_nats == pytest.approx(
        load_data(RunConfig.from_dict(json.loads((run / "config.json").read_text())).data).log_det_nats()
    )
    assert e.log_det_nats < -10  # without it the number would be off by more than 10 nats


@pytest.mark.slow  # (the fixture trains for ~5 s of CPU)
def test_rescaling_a_column_by_1000_moves_the_reported_number_by_exactly_minus_log_1000(fa_run, tmp_path):
    """The same weights re-evaluated after column 2 is multiplied by 1000 in the data and in the
    run's stored scaling (so the model's input is the same): -log 1000, to float32 rounding."""
    from benchmarks.tabular import rescaled_run

    from vaelab.evaluate import evaluate_run

    run, csv, _ = fa_run
    before = evaluate_run(run, k=20, progress=False)
    after = evaluate_run(rescaled_run(run, csv, 1, 1000.0, tmp_path), k=20, progress=False)
    assert before.log_px is not None and after.log_px is not None and before.elbo is not None
    assert after.log_px - before.log_px == pytest.approx(-math.log(1000), abs=1e-4)
    assert after.elbo - (before.elbo or 0) == pytest.approx(-math.log(1000), abs=1e-4)
    assert after.kl == pytest.approx(before.kl, abs=1e-6)


@pytest.mark.slow  # (the fixture trains for ~5 s of CPU)
def test_the_train_log_is_of_the_data_as_given(fa_run):
    """The selected epoch's validation bound in metrics.jsonl is the model's bound on its
    standardized input plus the Jacobian."""
    from vaelab import runs
    from vaelab.objectives import dataset_terms
    from vaelab.train import VALID_SEED_OFFSET

    run, _, _ = fa_run
    config = runs.read_config(run)
    splits = load_data(config.data)
    terms = dataset_terms(
        runs.load_model(run), splits.inputs("valid"), seed=config.train.seed + VALID_SEED_OFFSET
    )
    best = runs.best_record(runs.read_metrics(run))
    assert best["valid_bound_nats"] == pytest.approx(terms.bound + splits.log_det_nats(), abs=1e-9)
    assert best["valid_kl_nats"] == pytest.approx(terms.kl, abs=1e-9)


@pytest.mark.slow  # (the fixture trains for ~5 s of CPU)
def test_sample_and_reconstruct_write_rows_in_the_data_units(fa_run, tmp_path, capsys):
    from vaelab.cli import main

    run, _, _ = fa_run
    assert (
        main(["sample", str(run), "--out", str(tmp_path / "s.csv"), "--n", "3000", "--mode", "sample"]) == 0
    )
    header, *lines = (tmp_path / "s.csv").read_text().splitlines()
    assert header == "c1,c2,c3,c4,c5,c6" and len(lines) == 3000
    samples = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    data = (
        load_data(RunConfig.from_dict(json.loads((run / "config.json").read_text())).data)
        .train.double()
        .numpy()
    )
    # every column's sample mean and spread land on the data's, whatever its units (1e-3 .. 1e6)
    assert np.all(np.abs(samples.mean(0) - data.mean(0)) < 0.15 * data.std(0))
    assert np.all(np.abs(samples.std(0) / data.std(0) - 1) < 0.15)
    assert main(["reconstruct", str(run), "--out", str(tmp_path / "r.npy"), "--n", "7"]) == 0
    assert np.load(tmp_path / "r.npy").shape == (7, 6)
    assert main(["reconstruct", str(run)]) == 0 and (run / "reconstructions.csv").is_file()
    assert main(["sample", str(run), "--out", str(tmp_path / "s.txt")]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.slow  # (the fixture trains for ~5 s of CPU)
def test_tabular_figures_replace_image_tiles(fa_run, capsys):
    from vaelab.cli import main

    run, _, _ = fa_run
    assert main(["plot", str(run), "--kind", "all"]) == 0
    names = {p.name for p in (run / "figures").glob("*.png")}
    assert {"marginals.png", "pairs.png", "column-reconstructions.png", "scatter.png", "curves.png"} <= names
    assert not names & {
        "grid.png",
        "samples.png",
        "reconstructions.png",
        "traversals.png",
        "interpolation.png",
    }
    assert main(["plot", str(run), "--kind", "grid"]) == 2
    assert "figure kind 'grid' shows images" in capsys.readouterr().err
    assert main(["report", str(run), "--k", "20"]) == 0
    page = (run / "report.html").read_text()
    assert "Pairs of columns" in page and "Latent manifold" not in page and "No grid figure" not in page
    assert "change of variables of the input transform" in page


@pytest.mark.slow  # (the fixture trains for ~5 s of CPU; the AE for ~1 s)
def test_an_autoencoder_trains_on_a_table_and_compares_by_columns(fa_run, tmp_path):
    """An AE has no ELBO to shift by the standardization's Jacobian (this used to crash its first
    validation), and its comparison with a VAE draws columns, never a table's rows as image tiles."""
    from benchmarks.tabular import linear_vae_config

    from vaelab.experiments.compare import compare_runs
    from vaelab.experiments.report import write_report
    from vaelab.train import train

    run, csv, _ = fa_run
    config = linear_vae_config(csv, epochs=2).replace(model={"kind": "ae"})
    ae = train(config, tmp_path / "ae", progress=False).run_dir
    record = json.loads((ae / "metrics.jsonl").read_text().splitlines()[-1])
    assert "valid_elbo_nats" not in record and math.isfinite(record["valid_log_p_x_given_z_nats"])
    comparison = compare_runs(ae, run, tmp_path / "cmp", k=10)
    assert comparison.tabular and set(comparison.figures) == {"reconstructions", "samples", "scatter"}
    page = write_report(tmp_path / "cmp", k=10).read_text()
    assert "Each column of the same test rows" in page and "same test images" not in page
