"""The command line as a user meets it: a smoke run, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vaelab.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_evaluate_sample_reconstruct(tmp_path, capsys):
    out = tmp_path / "run"
    code, text, _ = run(
        capsys,
        "train",
        "--data",
        "digits",
        "--hidden",
        "32",
        "--latent-dim",
        "2",
        "--epochs",
        "2",
        "--out",
        out,
    )
    assert code == 0 and "valid ELBO" in text and "nats" in text
    code, text, _ = run(capsys, "evaluate", out, "--k", "50")
    assert code == 0 and "log p(x), IS k=50" in text
    result = json.loads((out / "eval.json").read_text())
    assert result["k"] == 50 and result["log_px"] >= result["elbo"] - 3 * result["log_px_stderr"]
    assert result["nll"] == -result["log_px"] and "nats per example" in result["units"]
    code, text, _ = run(capsys, "sample", out, "--n", "16")
    assert code == 0 and (out / "figures" / "samples-n16.png").stat().st_size > 1000
    assert f"written: {out / 'figures' / 'samples-n16.png'}" in text
    assert run(capsys, "reconstruct", out)[0] == 0 and (out / "figures" / "reconstructions.png").is_file()


def test_ae_evaluation_says_why_there_is_no_elbo(tmp_path, capsys):
    out = tmp_path / "ae"
    run(capsys, "train", "--data", "digits", "--model", "ae", "--hidden", "16", "--epochs", "1", "--out", out)
    code, text, _ = run(capsys, "evaluate", out, "--k", "10")
    assert code == 0 and "point mass" in text
    assert json.loads((out / "eval.json").read_text())["elbo"] is None


def test_config_file_and_flags(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": {"hidden": [16], "latent_dim": 3}, "train": {"epochs": 1}}))
    out = tmp_path / "run"
    assert (
        run(capsys, "train", "--data", "digits", "--config", config, "--latent-dim", "4", "--out", out)[0]
        == 0
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["latent_dim"] == 4 and saved["model"]["hidden"] == [16]


def _bad_inputs(tmp_path):
    nan = tmp_path / "nan.npy"
    np.save(nan, np.array([[0.1, np.nan]] * 20))
    wide = tmp_path / "wide.npy"
    np.save(wide, np.linspace(-1, 4, 40).reshape(20, 2))
    config = tmp_path / "typo.json"
    config.write_text(json.dumps({"train": {"epocs": 3}}))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 broken")
    return [
        (["--data", f"npz:{tmp_path / 'missing.npz'}"], "missing.npz: file not found"),
        (["--data", f"npz:{corrupt}"], "corrupt or truncated .npz"),
        (["--data", f"npy:{nan}"], "NaN"),
        (["--data", f"npy:{wide}", "--likelihood", "bernoulli"], "likelihood gaussian and a learned sigma"),
        (
            ["--data", "digits", "--latent-dim", "0"],
            "argument --latent-dim: Input should be greater than or equal to 1",
        ),
        (["--data", "digits", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
        (
            ["--data", "digits", "--config", str(config)],
            "train.epocs: unknown key; known: epochs, batch_size",
        ),
    ]


def test_bad_input_exits_2_with_one_line_and_leaves_no_run(tmp_path, capsys):
    for flags, message in _bad_inputs(tmp_path):
        out = tmp_path / "never"
        code, _, err = run(capsys, "train", *flags, "--epochs", "1", "--out", out)
        assert code == 2, flags
        assert err.count("\n") == 1 and err.startswith("vaelab: error:") and message in err, (flags, err)
        assert not out.exists(), flags


@pytest.mark.parametrize("command", ["evaluate", "sample", "reconstruct"])
def test_commands_on_a_missing_or_foreign_run(tmp_path, capsys, command):
    code, _, err = run(capsys, command, tmp_path / "nothing")
    assert code == 2 and "run directory not found" in err
    (tmp_path / "plain").mkdir()
    code, _, err = run(capsys, command, tmp_path / "plain")
    assert code == 2 and "not a vaelab run" in err


def test_a_bad_number_in_a_sweep_flag_is_one_line_naming_the_flag(tmp_path, capsys):
    code = main(["sweep", "latent", "--values", "2", "--out", str(tmp_path / "sw"), "--lr", "abc"])
    assert code == 2
    assert "argument --lr: expected a number, got 'abc'" in capsys.readouterr().err


@pytest.mark.slow
def test_compile_flag_turns_compilation_on_and_off(tmp_path, capsys, parse_train):
    config = parse_train

    assert config().train.compile == "auto"
    assert config("--compile").train.compile == "on"  # the old boolean flags keep working
    assert config("--preset", "recipe", "--compile").train.compile == "on"
    assert (
        config("--config", _json(tmp_path, {"train": {"compile": True}}), "--no-compile").train.compile
        == "off"
    )
    assert config("--config", _json(tmp_path, {"train": {"compile": True}})).train.compile == "on"
    out = tmp_path / "run"
    code, text, _ = run(
        capsys, "train", "--data", "digits", "--hidden", "16", "--epochs", "1", "--compile", "--out", out
    )
    assert code == 0 and "compiled the training step in" in text
    assert json.loads((out / "config.json").read_text())["train"]["compile"] == "on"


def _json(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(content))
    return path
