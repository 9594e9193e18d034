"""The conditional VAE (`--condition label`): its networks read the label through one mechanism,
`model.given(y)` is the protocol model of q(z|x, y) and p(x|z, y), its classes are stored in the
run, and `vaelab sample --label` draws a class by code or name; every misuse is one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import vaelab
from vaelab import runs
from vaelab.cli import main
from vaelab.config import ConfigError, RunConfig
from vaelab.data import Splits
from vaelab.errors import UserError
from vaelab.labels import describe_classes, label_code, resolve_classes
from vaelab.models import VAE, ConditionalVAE, build_model
from vaelab.nets import GatedLinear, LabelConditioned
from vaelab.objectives import objective_for
from vaelab.train import step_loss

CLASSES = ("a", "b", "c")


def conditional(**model) -> RunConfig:
    fields = {"condition": "label", "classes": CLASSES, "hidden": (8,), "latent_dim": 2, **model}
    return RunConfig().replace(model=fields)


@pytest.mark.parametrize("net", ["mlp", "gated", "conv", "resnet"])
def test_every_net_reads_the_one_hot_label_at_its_first_fully_connected_layer(net):
    config = conditional(net=net, width=4)
    torch.manual_seed(0)
    model = build_model(config.model, (1, 8, 8))
    plain = VAE(config.model, (1, 8, 8)).state_dict()
    widened = {
        name: tensor.shape for name, tensor in model.state_dict().items() if tensor.shape != plain[name].shape
    }
    # the same parameters by name; only the first fully connected layer of each net is wider, by C inputs
    assert model.state_dict().keys() == plain.keys()
    for network in ("encoder", "decoder"):
        at = getattr(model, network).at
        layer = getattr(model, network)[at]
        gated = isinstance(layer, GatedLinear)
        linear = layer.linear if gated else layer
        name = f"{network}.{at}.{'linear.' if gated else ''}weight"
        assert widened[name][1] == plain[name].shape[1] + len(CLASSES) == linear.in_features
    assert len(widened) == 2
    x, y = torch.rand(5, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    q = model.given(y).posterior(x)
    assert q.batch_shape == (5,) and q.event_shape == (2,)
    # the label changes both networks' outputs
    other = (y + 1) % 3
    assert not torch.allclose(model.posterior_params_given(x, y), model.posterior_params_given(x, other))
    z = torch.randn(5, 2)
    assert not torch.allclose(model.likelihood_given(z, y).mean, model.likelihood_given(z, other).mean)


def test_given_y_broadcasts_over_sample_dims_in_float64():
    torch.manual_seed(0)
    model = build_model(conditional(likelihood="gaussian").model, (6,)).double()
    x, y = torch.rand(4, 6, dtype=torch.float64), torch.tensor([2, 0, 1, 2])
    z = torch.randn(3, 5, 4, 2, dtype=torch.float64)  # (S1, S2, B, Z)
    log_p = model.given(y).likelihood(z).log_prob(x)
    assert log_p.shape == (3, 5, 4) and log_p.dtype == torch.float64
    loop = torch.stack([model.likelihood_given(z[i, j], y).log_prob(x) for i in range(3) for j in range(5)])
    torch.testing.assert_close(log_p.reshape(15, 4), loop, rtol=0, atol=1e-12)
    # one z for every row: (B, Z)
    torch.testing.assert_close(model.given(y).likelihood(z[0, 0]).log_prob(x), loop[0], rtol=0, atol=1e-12)


def test_the_vamp_prior_gives_its_pseudo_inputs_the_labels_k_mod_c():
    torch.manual_seed(0)
    model = build_model(conditional(prior="vamp", prior_components=5).model, (1, 8, 8))
    u = nn.functional.hardtanh(model.pseudo_inputs, 0.0, 1.0)
    expected = model.posterior_given(u, torch.tensor([0, 1, 2, 0, 1]))
    torch.testing.assert_close(model.pseudo_posterior().mean, expected.mean)
    assert torch.isfinite(model.prior().log_prob(torch.randn(7, 2))).all()


def test_a_conditional_model_needs_labels_and_its_classes():
    model = build_model(conditional().model, (1, 8, 8))
    assert isinstance(model, ConditionalVAE) and model.uses_labels and model.num_classes == 3
    with pytest.raises(UserError, match=r"q\(z\|x, y\) needs the labels y: use model.given\(y\)"):
        model.posterior(torch.rand(2, 1, 8, 8))
    with pytest.raises(UserError, match=r"p\(x\|z, y\) needs the labels y"):
        model.likelihood(torch.randn(2, 2))
    with pytest.raises(UserError, match="model.classes: a conditional model needs its classes"):
        build_model(conditional(classes=None).model, (1, 8, 8))


def test_the_conditional_training_step_compiles_to_one_graph():
    torch.manual_seed(0)
    model = build_model(conditional().model, (1, 8, 8)).train()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 3, (16,))
    torch._dynamo.reset()
    explained = torch._dynamo.explain(step_loss)(
        model, objective_for(model, "elbo"), x, None, torch.tensor(0.5), 1, "fp32", y
    )
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


def test_label_conditioned_keeps_the_layers_of_the_net_it_conditions():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    conditioned = LabelConditioned(net, 5)
    assert conditioned.at == 1 and conditioned[1].in_features == 9 and conditioned[3] is net[3]
    assert conditioned(torch.rand(6, 2, 2), torch.arange(6) % 5).shape == (6, 2)


# ------------------------------------------------------------------------------ config, classes


def test_config_refusals_are_one_line():
    with pytest.raises(
        ConfigError, match="model: Value error, condition: label applies to model.kind vae, not ae"
    ):
        RunConfig().replace(model={"condition": "label", "kind": "ae"})
    with pytest.raises(ConfigError, match="model.classes: Value error, a class is named twice"):
        conditional(classes=("a", "a"))
    with pytest.raises(ConfigError, match="model.classes"):
        conditional(classes=("a",))
    assert RunConfig().ignored_settings({"model.classes"}) == [
        "model.classes: ignored (it applies to model.condition label and the m2 model)"
    ]
    assert conditional().ignored_settings({"model.classes"}) == []


def _splits(train_labels, names=None, **labels) -> Splits:
    x = torch.zeros(len(train_labels), 1, 2, 2)
    valid = labels.get("valid", torch.tensor([0, 1]))
    test = labels.get("test", torch.tensor([1, 0]))
    return Splits("d", x, x[: len(valid)], x[: len(test)], torch.tensor(train_labels), valid, test, names)


def test_classes_are_resolved_from_the_data_and_stored():
    config = RunConfig().replace(model={"condition": "label"})
    assert resolve_classes(config, _splits([0, 2, 1])).model.classes == ("0", "1", "2")
    named = resolve_classes(config, _splits([0, 1], names=("cat", "dog")))
    assert named.model.classes == ("cat", "dog")
    assert resolve_classes(named, _splits([0, 1], names=("cat", "dog"))) == named  # a resumed run keeps them
    assert resolve_classes(RunConfig(), _splits([0, 1])) == RunConfig()
    with pytest.raises(UserError, match=r"^mnist5k: model.classes names 3 classes; these data have 2$"):
        resolve_classes(config.replace(model={"classes": ("a", "b", "c")}), _splits([0, 1]))
    with pytest.raises(UserError, match="needs at least two classes; these data have one"):
        resolve_classes(config, _splits([0, 0], valid=torch.tensor([0]), test=torch.tensor([0])))


def test_labels_are_read_by_name_or_code_and_a_wrong_one_names_the_valid_ones():
    names = ("T-shirt", "trouser", "sneaker")
    assert [label_code(names, v) for v in ("sneaker", "1", 0, " 2")] == [2, 1, 0, 2]
    assert label_code(("10", "3"), "3") == 1  # a name first, then a code
    for wrong in ("3", "-1", "boot", 7, ""):
        with pytest.raises(
            UserError, match=r"is not a class of this model; its classes: 0 T-shirt, 1 trouser, 2 sneaker$"
        ):
            label_code(names, wrong)
    assert describe_classes(tuple(str(i) for i in range(40)), most=3) == "0, 1, 2, ... (40 in all)"


# ------------------------------------------------------------------------------ end to end


def shapes_folder(root, n=24):
    """Two classes of 8x8 grey PNGs: `bright` (levels near 230) and `dark` (near 25)."""
    rng = np.random.default_rng(0)
    for name, level in (("bright", 230), ("dark", 25)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(level + rng.normal(0, 10, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A conditional run and a plain one on a folder of two named classes (a few seconds)."""
    base = tmp_path_factory.mktemp("conditional")
    data = shapes_folder(base / "shapes")
    threads = torch.get_num_threads()
    flags = ["--data", f"folder:{data}", "--hidden", "16", "--latent-dim", "2", "--epochs", "30", "--quiet"]
    flags += ["--batch-size", "16", "--lr", "3e-3", "--threads", "1", "--compile", "off"]
    try:
        assert main(["train", *flags, "--condition", "label", "--out", str(base / "cvae")]) == 0
        assert main(["train", *flags, "--epochs", "1", "--out", str(base / "vae")]) == 0
    finally:
        torch.set_num_threads(threads)
    return base


def test_a_conditional_run_stores_its_classes_and_samples_each_class(trained, capsys):
    cvae = trained / "cvae"
    assert runs.read_config(cvae).model.classes == ("bright", "dark")
    model = vaelab.load(cvae)
    bright, dark = vaelab.sample(model, 32, label="bright"), vaelab.sample(model, 32, label=1)
    assert bright.shape == (32, 1, 8, 8) and float(bright.mean()) > float(dark.mean()) + 0.2
    # the CLI: by name or code, PNG and rows
    assert main(["sample", str(cvae), "--label", "dark", "--n", "4"]) == 0
    assert (cvae / "figures" / "samples-n4-label1.png").is_file()
    assert main(["sample", str(cvae), "--label", "0", "--n", "5", "--out", str(trained / "b.npy")]) == 0
    rows = np.load(trained / "b.npy")
    assert rows.shape == (5, 1, 8, 8) and rows.mean() > float(dark.mean())
    capsys.readouterr()


def test_evaluate_reports_log_p_x_given_the_true_label(trained, capsys):
    assert main(["evaluate", str(trained / "cvae"), "--k", "20", "--gap-rows", "0"]) == 0
    out = capsys.readouterr().out
    assert "conditional on each example's true label y" in out and "log p(x|y), IS k=20" in out
    saved = json.loads((trained / "cvae" / "eval.json").read_text())
    assert saved["given"].startswith("the true label y of each example: log_px is log p(x|y)")
    assert math.isfinite(saved["log_px"]) and saved["log_px"] >= saved["elbo"] - 3 * saved["log_px_stderr"]


@pytest.mark.parametrize(
    "argv, error",
    [
        (
            ["--label", "cat"],
            r"argument --label: label 'cat' is not a class of this model; its classes: 0 bright, 1 dark",
        ),
        (["--label", "2"], r"argument --label: label '2' is not a class"),
        (
            ["--out", "x.npy"],
            r"is a conditional run: sample its rows given a class, --label LABEL \(its classes: 0 bright, "
            r"1 dark\); its picture \(\.png\) without --label shows each class in turn",
        ),
        (["--label", "0", "--out", "x.csv"], None),
        (["--out", "x.png"], None),
    ],
)
def test_sample_label_errors_are_one_line(trained, capsys, argv, error, tmp_path):
    argv = [str(tmp_path / a) if a.startswith("x.") else a for a in argv]
    code = main(["sample", str(trained / "cvae"), "--n", "2", *argv])
    err = capsys.readouterr().err
    if error is None:
        written = argv[-1]
        assert code == 0
        if written.endswith(".csv"):
            assert (tmp_path / "x.csv").read_text().startswith("x1,x2")
        else:  # the picture without a label: each class in turn
            assert (tmp_path / "x.png").is_file()
        return
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("vaelab: error: ")
    assert __import__("re").search(error, err), err


def test_a_label_for_a_run_that_is_not_conditional_is_refused(trained, capsys):
    assert main(["sample", str(trained / "vae"), "--label", "1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"vaelab: error: argument --label: {trained / 'vae'} is not a conditional run (trained without "
        "--condition label)"
    )
    with pytest.raises(UserError, match=r"label 1: the model is not conditional \(model.condition none\)"):
        vaelab.sample(vaelab.load(trained / "vae"), 2, label=1)
