"""The config: strict validation of every field, one line per problem naming the field, and the
command line generated from the same field metadata."""

from __future__ import annotations

import json
import math
from typing import get_args

import pytest

from vaelab.cli import build_parser, main
from vaelab.config import PRESETS, SECTIONS, PresetName, RunConfig, preset, read_config_file
from vaelab.errors import UserError


def test_round_trip_through_json():
    config = preset("recipe")
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.model.hidden == (300, 300)  # a JSON list is read back as the tuple it was


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"model": {"dropout": "0.1"}}, r"model\.dropout: Input should be a valid number, got '0.1'"),
        ({"train": {"lr": None}}, r"train\.lr: .*got None"),
        ({"train": {"epochs": True}}, r"train\.epochs: Input should be a valid integer, got True"),
        ({"train": {"epochs": 1.5}}, r"train\.epochs: Input should be a valid integer"),
        ({"train": {"seed": "0"}}, r"train\.seed: Input should be a valid integer"),
        ({"train": {"seed": 2**70}}, r"train\.seed: Input should be less than 4294967296"),
        ({"train": {"seed": -1}}, r"train\.seed: Input should be greater than or equal to 0"),
        ({"train": {"patience": math.nan}}, r"train\.patience: Input should be a valid integer"),
        ({"train": {"minutes": math.inf}}, r"train\.minutes: Input should be a finite number"),
        ({"objective": {"beta": math.nan}}, r"objective\.beta: Input should be a finite number"),
        ({"model": {"activation": ["relu"]}}, r"model\.activation: Input should be 'relu', 'elu'"),
        ({"data": {"source": 3}}, r"data\.source: Input should be a valid string"),
        ({"model": {"hidden": [], "net": "gated"}}, r"model: .*a gated net needs at least one hidden layer"),
        (
            {"data": {"standardize_mean": [1.0]}},
            r"data: .*standardize_mean and standardize_scale come together",
        ),
        ({"model": {"hidden": [400, "8"]}}, r"model\.hidden\.1: Input should be a valid integer"),
        ({"model": {"latent_dim": 0}}, r"model\.latent_dim: Input should be greater than or equal to 1"),
        ({"model": {"sigma": -1.0}}, r"model\.sigma: Input should be greater than 0"),
        ({"train": {"ema": 1.0}}, r"train\.ema: Input should be less than 1"),
        ({"model": {"latnet_dim": 4}}, r"model\.latnet_dim: unknown key"),
        ({"modle": {}}, r"modle: unknown key"),
        ({"model": 4}, r"model: Input should be a valid dictionary"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_field(raw, match):
    with pytest.raises(UserError, match=match) as caught:
        RunConfig.from_dict(raw, where="c.json")
    assert str(caught.value).startswith("c.json: ") and "\n" not in str(caught.value)


def test_several_problems_are_counted_in_the_one_line():
    with pytest.raises(UserError, match=r"\(and 1 more problem\)"):
        RunConfig.from_dict({"model": {"dropout": "x", "latent_dim": "y"}})


def test_a_config_file_that_is_not_json_or_too_deep_or_too_big_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(UserError, match="not valid JSON"):
        read_config_file(path)
    path.write_text("{" + " " * (2 << 20) + "}")
    with pytest.raises(UserError, match="too large for a config file"):
        read_config_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a JSON object"):
        read_config_file(path)
    with pytest.raises(UserError, match="not a regular file"):
        read_config_file(tmp_path)


def test_preset_names_are_the_presets():
    assert set(get_args(PresetName)) == set(PRESETS)
    assert preset("classic").model.hidden == (400,)


def test_every_config_field_is_a_train_flag():
    """One field, one flag: the CLI is generated from the config, nothing is left out."""
    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()  # noqa: SLF001
    for section in SECTIONS:
        for name, info in type(getattr(RunConfig(), section)).model_fields.items():
            flag = {"source": "--data", "kind": "--model", "name": "--objective"}.get(
                name, "--" + name.replace("_", "-")
            )
            assert flag in text, f"{section}.{name} has no flag"
            assert info.description, f"{section}.{name} has no description for --help"


def test_flags_files_and_presets_layer_in_order(tmp_path, parse_train):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"epochs": 7, "lr": 0.01}}))
    config = parse_train("--preset", "classic", "--config", path, "--lr", "0.5")
    assert (config.model.hidden, config.train.epochs, config.train.lr) == ((400,), 7, 0.5)
    assert parse_train("--sigma", "learned", "--likelihood", "gaussian").model.sigma is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--likelihood", "bernoulli", "--sigma", "0.2"],
            "--sigma: ignored (it applies to the gaussian, logistic and mixed likelihoods)",
        ),
        (["--sigma", "0.2"], "mnist5k: model.sigma: ignored (likelihood auto is bernoulli for these data"),
        (
            [
                "--data",
                "mnist5k",
                "--standardize-mean",
                "1",
                "--standardize-scale",
                "1",
                "--standardize",
                "off",
            ],
            "--standardize-mean: ignored (standardize is off)",
        ),
        (["--net", "gated", "--activation", "tanh"], "--activation: ignored (a gated net has gates instead)"),
        (["--prior-components", "10"], "--prior-components: ignored (the normal prior has no components)"),
        (["--k", "5"], "--k: ignored (the elbo objective draws one sample)"),
        (["--lr-patience", "3"], "--lr-patience: ignored (it applies to lr_schedule plateau)"),
        (["--model", "ae", "--beta", "2"], "--beta: ignored (an ae trains on the reconstruction term only)"),
        (["--model", "ae", "--prior", "vamp"], "--prior: ignored (an ae has no prior)"),
    ],
)
def test_a_setting_that_would_be_ignored_is_refused(argv, message, capsys, tmp_path):
    assert main(["train", *argv, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_setting_ignored_in_a_config_file_names_the_file_and_field(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"likelihood": "bernoulli", "sigma": 0.3}}))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert f"{path}: model.sigma: ignored" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--lr", "-1"], "argument --lr: Input should be greater than 0, got -1.0"),
        (["train", "--lr", "abc"], "argument --lr: expected a number, got 'abc'"),
        (["train", "--hidden", "4,x"], "argument --hidden: expected comma-separated values"),
        (
            ["train", "--hidden", "4,0"],
            "argument --hidden: item 1: Input should be greater than or equal to 1",
        ),
        (["train", "--seed", "99999999999999999999999"], "argument --seed: Input should be less than"),
        (["train", "--epochs", "0"], "argument --epochs: Input should be greater than or equal to 1"),
        (["sample", "RUN", "--n", "0"], "argument --n: Input should be greater than or equal to 1, got 0"),
        (["evaluate", "RUN", "--k", "0"], "argument --k: Input should be greater than or equal to 1"),
        (["bayes", "--prior", "2", "--sensitivity", "1", "--false-positive-rate", "0"], "argument --prior"),
        (["plot", "RUN", "--range", "1,2,3"], "argument --range: Tuple should have at least 4 items"),
    ],
)
def test_a_bad_flag_is_one_line_naming_the_flag(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_repeatable_option_collects_one_item_per_flag():
    """The mechanism later options such as `--track tensorboard --track mlflow` use."""
    import argparse
    from typing import Annotated, Literal

    from pydantic import Field

    from vaelab.cli.options import add_fields, build
    from vaelab.config import Flag, Options

    class Tracking(Options):
        track: Annotated[
            tuple[Literal["none", "tensorboard", "mlflow"], ...],
            Field(description="trackers"),
            Flag(repeat=True),
        ] = ("none",)

    parser = argparse.ArgumentParser()
    fields = add_fields(parser, Tracking)
    parsed = build(Tracking, parser.parse_args(["--track", "tensorboard", "--track", "mlflow"]), fields)
    assert parsed.track == ("tensorboard", "mlflow")
    assert build(Tracking, parser.parse_args([]), fields).track == ("none",)
    with pytest.raises(SystemExit, match="2"):
        parser.parse_args(["--track", "wandb"])  # (argparse's own choices check)
