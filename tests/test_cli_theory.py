"""The theory subcommands through the command line: run, read stdout."""

from __future__ import annotations

import re

import pytest

from vaelab.cli import main


def run(argv, capsys):
    assert main(argv) == 0
    return capsys.readouterr().out


def test_bayes_prints_evidence_posterior_and_joint(capsys):
    out = run(["bayes", "--prior", "0.01", "--sensitivity", "0.95", "--false-positive-rate", "0.05"], capsys)
    assert "evidence P(+) = 0.059000" in out
    assert "posterior P(disease | +) = 0.161017" in out
    assert re.search(r"disease\s+0\.009500\s+0\.000500\s+0\.010000", out)
    assert re.search(r"healthy\s+0\.049500\s+0\.940500\s+0\.990000", out)
    assert re.search(r"total\s+0\.059000\s+0\.941000\s+1\.000000", out)


@pytest.mark.parametrize(
    "argv",
    [
        ["bayes", "--prior", "1.2", "--sensitivity", "0.9", "--false-positive-rate", "0.1"],
        ["bayes", "--prior", "abc", "--sensitivity", "0.9", "--false-positive-rate", "0.1"],
        ["bayes", "--prior", "nan", "--sensitivity", "0.9", "--false-positive-rate", "0.1"],
        # A positive result is impossible: P(+) = 0, so P(disease | +) is undefined.
        ["bayes", "--prior", "0", "--sensitivity", "0.9", "--false-positive-rate", "0"],
        ["estimators", "--k", "1,0"],
        ["estimators", "--k", "1,,10"],
        ["estimators", "--batch-size", "-3"],
        ["kl-directions", "--out", "plot.jpg"],
        ["kl-directions", "--out", "/nonexistent-dir/plot.png"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vaelab: error: ") and err.count("\n") == 1


def test_estimators_shows_the_posterior_families_gaps_on_a_linear_gaussian_model(capsys):
    argv = ["estimators", "--model", "linear-gaussian-correlated", "--k", "10", "--fit-steps", "30"]
    out = run(argv, capsys)
    assert "posterior families, each an affine encoder trained 30 steps" in out
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split()[:1] in (["diagonal"], ["full"], ["iaf"])
    }
    assert set(rows) == {"diagonal", "full", "iaf"}
    assert rows["diagonal"][3] == "0.7887" and rows["full"][3] == "0.0000"  # theory's best gaps
    assert all(float(row[1]) > 0 for row in rows.values())  # a gap is a KL: positive


@pytest.mark.parametrize(
    "model", ["linear-gaussian", "linear-gaussian-correlated", "bernoulli-mixture", "binary-latent"]
)
def test_estimators_prints_a_table(model, capsys):
    argv = [
        "estimators",
        "--model",
        model,
        "--k",
        "1,10,100",
        "--seed",
        "1",
        "--batch-size",
        "4",
        "--fit-steps",
        "0",
    ]
    out = run(argv, capsys)
    assert f"model {model}" in out
    lines = out.splitlines()
    separator = next(i for i, line in enumerate(lines) if set(line) == {"-"})
    rows = [line.split() for line in lines[separator + 1 : -1]]  # table body, without the footnote
    assert len(rows) == 1 + 3 * 4
    exact = [row for row in rows if row and row[0] == "exact"]
    assert len(exact) == 1
    for name in ("ELBO", "IWAE", "IS"):
        assert [row[1] for row in rows if row and row[0] == name] == ["1", "10", "100"]
    assert sum(1 for row in rows if row[:2] == ["naive", "MC"]) == 3
    assert "bits/dim" in out


def test_estimators_is_reproducible(capsys):
    argv = ["estimators", "--k", "10,100", "--seed", "5", "--batch-size", "3"]
    first, second = run(argv, capsys), run(argv, capsys)

    def values(text):  # every column but wall time
        return [line.split()[:-2] for line in text.splitlines() if line.startswith(("IS", "IWAE", "ELBO"))]

    assert values(first) == values(second)


def test_kl_directions_prints_fits_and_writes_png(tmp_path, capsys):
    path = tmp_path / "kl.png"
    out = run(["kl-directions", "--out", str(path)], capsys)
    best = re.search(r"best: mean (-?[\d.]+), std ([\d.]+)", out)
    assert best and abs(abs(float(best.group(1))) - 3) < 0.05 and abs(float(best.group(2)) - 1) < 0.05
    assert re.search(r"optimizer: mean 0\.0000, variance 10\.0000", out)
    assert "mode-seeking" in out and "mass-covering" in out
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert f"written: {path}" in out
