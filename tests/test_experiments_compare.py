"""AE vs VAE: the probe beats chance by a wide margin, the AE gets no ELBO and says why, files round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab import runs
from vaelab.cli import main
from vaelab.data import Splits, load_data
from vaelab.errors import UserError
from vaelab.experiments import compare
from vaelab.viz.plot import plot_run


@pytest.fixture(scope="session")
def comparison(pair, tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "trained-pair" / "compare"
    return compare.compare_runs(pair.vae, pair.ae, out, k=20)


@pytest.mark.slow
def test_probe_on_a_trained_vae_code_beats_chance_by_a_wide_margin(pair):
    splits = load_data(pair.config.data)
    probe = compare.probe_codes(runs.load_model(pair.vae), splits)
    # 10 balanced classes: chance is 0.1; a 2-D code after six short epochs separates far better
    assert probe.chance_accuracy == pytest.approx(0.1, abs=0.01)
    assert probe.accuracy > 0.5
    assert (
        probe.num_fit == len(splits.train)
        and probe.num_scored == len(splits.test)
        and probe.num_classes == 10
    )
    assert "train-split codes" in probe.protocol


@pytest.mark.slow
def test_comparison_measures_both_and_says_why_the_ae_has_no_elbo(comparison, pair):
    vae, ae = comparison.a, comparison.b
    assert (vae.kind, ae.kind) == ("vae", "ae") and comparison.differences == ()
    assert vae.elbo is not None and vae.log_px is not None and vae.log_px >= vae.elbo - 1.0
    assert vae.elbo == pytest.approx(vae.log_p_x_given_z - vae.kl, abs=1e-6)
    assert ae.elbo is None and ae.log_px is None and "point mass" in ae.no_elbo_reason
    for s in (vae, ae):
        assert 0 < s.squared_error_per_pixel < 0.2 and len(s.code_mean) == len(s.code_std) == 2
        assert s.probe is not None and s.probe.accuracy > 2 * s.probe.chance_accuracy
        assert s.epochs == pair.config.train.epochs
    # the VAE's KL pulls its codes towards N(0, I); nothing holds the AE's code to that scale
    assert max(abs(m) for m in vae.code_mean) < 1.0


@pytest.mark.slow
def test_comparison_files_round_trip_and_the_table_names_units(comparison):
    out = comparison.out_dir
    raw = json.loads((Path(out) / "compare.json").read_text())
    assert compare.Comparison.from_dict(raw) == compare.Comparison.from_dict(comparison.to_dict())
    assert raw["b"]["elbo"] is None and "nats per example" in raw["units"]
    for name in comparison.figures.values():
        assert (Path(out) / name).stat().st_size > 10_000
    assert comparison.figures == {name: f.file_name for name, f in compare.COMPARE_FIGURES.items()}
    table = (Path(out) / "compare.md").read_text(encoding="utf-8")
    assert "| ELBO | nats per example |" in table and "E_q[log p(x\\|z)]" in table
    assert "no ELBO or log p(x)" in table and "Same networks, data and training budget" in table
    assert "| active units (A_u = Cov_x(E_q[z_u]) > 0.01) | count |" in table and "| z1 " in table
    assert compare.resolve_run(Path(out), comparison.a.run) == Path(out).parent / "vae"


def test_probe_splits_the_test_rows_when_only_they_carry_labels(tiny_model):
    model = tiny_model()
    rng = torch.Generator().manual_seed(0)
    y = torch.arange(80) % 4
    x = torch.rand(80, 1, 8, 8, generator=rng) * 0.2 + y.reshape(-1, 1, 1, 1) * 0.2  # labels shape the pixels
    splits = Splits("t", torch.rand(30, 1, 8, 8), torch.rand(10, 1, 8, 8), x, None, None, y)
    probe = compare.probe_codes(model, splits, seed=1)
    assert probe.num_fit == probe.num_scored == 40 and "only the test split has labels" in probe.protocol
    assert probe.chance_accuracy == pytest.approx(0.25)  # stratified: each half keeps the class balance
    assert compare.probe_codes(model, Splits("u", x, x, x)) is None


def test_linear_probe_separates_separable_codes_perfectly():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 50)
    z = rng.normal(size=(150, 2)) * 0.1 + np.array([[0, 0], [100, 0], [0, 100]])[y]
    assert compare.linear_probe(z[::2], y[::2], z[1::2], y[1::2]) == 1.0


@pytest.mark.slow
def test_config_differences_and_different_data_are_reported(pair, tmp_path):
    a = pair.config.to_dict()
    b = pair.config.replace(model={"kind": "ae"}, train={"epochs": 9}).to_dict()
    assert compare.config_differences(a, b) == ("train.epochs: 6 vs 9",)
    other = tmp_path / "other"
    other.mkdir()
    runs.write_json(other / "config.json", pair.config.replace(data={"source": "digits"}).to_dict())
    runs.write_json(other / "run.json", runs.run_info(pair.vae))
    with pytest.raises(UserError, match="different data"):
        compare.compare_runs(pair.vae, other, tmp_path / "c")


@pytest.mark.slow
def test_cli_compare_prints_the_table(pair, comparison, tmp_path, capsys):
    assert (
        main(["compare", str(pair.vae), str(pair.ae), "--out", str(tmp_path / "c"), "--n", "5", "--k", "20"])
        == 0
    )
    out = capsys.readouterr().out
    assert "probe accuracy" in out and "written:" in out and (tmp_path / "c" / "compare-grid.png").is_file()
    assert main(["compare", str(pair.vae), str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_an_autoencoder_run_written_before_still_loads_plots_and_compares(pair, tmp_path):
    # regression: an AE's records no longer carry the ELBO's keys and a KL of 0 (it has neither);
    # a run written with them keeps loading, plotting and comparing
    old = tmp_path / "old-ae"
    old.mkdir()
    for name in (runs.CONFIG, runs.RUN, runs.WEIGHTS, "eval.json"):  # (eval.json last: it stays current)
        (old / name).write_bytes((pair.ae / name).read_bytes())
    records = runs.read_metrics(pair.ae)
    written_before = [
        {
            **r,
            **{f"{split}_elbo_nats": r[f"{split}_log_p_x_given_z_nats"] for split in ("train", "valid")},
            "train_kl_nats": 0.0,
            "valid_kl_nats": 0.0,
        }
        for r in records
    ]
    (old / runs.METRICS).write_text("".join(json.dumps(r) + "\n" for r in written_before))
    assert runs.read_metrics(old) == records
    assert plot_run(old, "curves", tmp_path / "curves.png").stat().st_size > 0
    comparison = compare.compare_runs(pair.vae, old, tmp_path / "compare", k=20)
    ae = comparison.b
    assert ae.kind == "ae" and ae.elbo is None and ae.epochs == len(records)
    assert ae.best_epoch == runs.best_record(records)["epoch"]
