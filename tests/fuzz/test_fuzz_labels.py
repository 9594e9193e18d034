"""Fuzzing the labels: `vaelab sample --label` and `vaelab plot --label` with any text on a
conditional run and on a plain one, a conditional run's config.json with mutated `model.classes`
through `sample` and `evaluate`, and `vaelab train --condition` / `--classes` with any value or
with data that have no labels. Each case either succeeds (a valid label must) or exits 2 with one
line, and a failing command leaves no file behind (`fuzz.cli`'s checks).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.train import train

FUZZ = settings.get_profile("vaelab-fuzz")
FUZZ_RUN = settings.get_profile("vaelab-fuzz-run")
TINY = RunConfig().replace(
    data={"source": "digits"},
    model={"hidden": (8,), "latent_dim": 2, "condition": "label"},
    train={"epochs": 1, "threads": 1, "compile": "off"},
)
CLASSES = tuple(str(code) for code in range(10))  # digits' labels 0..9, without names


@pytest.fixture(scope="module")
def conditional_and_plain(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("fuzz-labels")
    threads = torch.get_num_threads()
    try:
        train(TINY, base / "cvae", progress=False)
        train(TINY.replace(model={"condition": "none"}), base / "vae", progress=False)
    finally:
        torch.set_num_threads(threads)
    return base / "cvae", base / "vae"


LABELS = st.one_of(
    st.text(max_size=12),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from([*CLASSES, "10", "-1", "07", " 3", "3 ", "٣", "1e1", "nan", "--label", "0x1"]),
)


@settings(FUZZ_RUN)
@given(label=LABELS, out=st.sampled_from([None, "s.png", "s.npy", "s.csv"]))
def test_fuzz_sample_label(fuzz, conditional_and_plain, label, out):
    cvae, vae = conditional_and_plain
    text = label.strip()
    valid = label in CLASSES or (text.isascii() and text.isdigit() and int(text) < len(CLASSES))
    with tempfile.TemporaryDirectory() as tmp:
        where = ["--out", str(Path(tmp) / out)] if out else []
        fuzz.cli(
            "sample --label",
            ["sample", str(cvae), "--n", "2", f"--label={label}", *where],
            must_refuse=not valid,
            unchanged_on_failure=cvae,
        )
        fuzz.cli(
            "sample --label of a plain run",
            ["sample", str(vae), "--n", "2", f"--label={label}", *where],
            must_refuse=True,
            unchanged_on_failure=vae,
        )


PLOT_KINDS = ("samples", "grid", "interpolation", "traversals", "scatter", "reconstructions")
LABEL_KINDS = ("samples", "grid", "interpolation", "traversals")  # the kinds that take --label


@settings(FUZZ_RUN)
@given(label=LABELS, kind=st.sampled_from(PLOT_KINDS))
def test_fuzz_plot_label(fuzz, conditional_and_plain, label, kind):
    """`vaelab plot --label` decodes a conditional run's figure under a class: valid for a class of
    the run and a kind that decodes under a given label, refused otherwise and on a plain run."""
    cvae, vae = conditional_and_plain
    text = label.strip()
    valid = label in CLASSES or (text.isascii() and text.isdigit() and int(text) < len(CLASSES))
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["--kind", kind, "--n", "2", f"--label={label}", "--out", str(Path(tmp) / "f.png")]
        fuzz.cli(
            "plot --label",
            ["plot", str(cvae), *argv],
            must_refuse=not (valid and kind in LABEL_KINDS),
            unchanged_on_failure=cvae,
        )
        fuzz.cli(
            "plot --label of a plain run",
            ["plot", str(vae), *argv],
            must_refuse=True,
            unchanged_on_failure=vae,
        )


CLASS_VALUES = st.one_of(
    st.none(),
    st.lists(st.text(max_size=6), max_size=12),
    st.lists(st.integers(), max_size=3),
    st.sampled_from([[], ["0"], CLASSES[:9], [*CLASSES, "10"], [*CLASSES[:9], "0"], "0123456789", 10]),
    st.sampled_from([list(CLASSES), list("abcdefghij"), [*"abcdefghi", "x" * 201]]),
)


@settings(FUZZ_RUN)
@given(classes=CLASS_VALUES, command=st.sampled_from(["sample", "evaluate"]))
def test_fuzz_stored_classes(fuzz, conditional_and_plain, classes, command):
    """A conditional run whose config.json's model.classes was changed: any other number of classes
    no longer fits its weights."""
    cvae, _ = conditional_and_plain
    root = Path(tempfile.mkdtemp(prefix="vaelab-fuzz-"))
    try:
        run = root / "run"
        shutil.copytree(cvae, run)
        config = json.loads((run / runs.CONFIG).read_text())
        config["model"]["classes"] = classes
        (run / runs.CONFIG).write_text(json.dumps(config))
        argv = (
            ["sample", str(run), "--n", "2", "--label", "0"]
            if command == "sample"
            else ["evaluate", str(run)]
        )
        same = isinstance(classes, list) and len(classes) == len(set(classes)) == 10
        fits = same and all(isinstance(c, str) and 0 < len(c) <= 200 for c in classes)
        fuzz.cli(
            f"stored classes, {command}",
            [*argv, "--k", "2", "--gap-rows", "0"] if command == "evaluate" else argv,
            must_refuse=not fits,
            unchanged_on_failure=run,
        )
    finally:
        shutil.rmtree(root)


@settings(FUZZ)
@given(
    condition=st.text(max_size=8) | st.sampled_from(["label", "none", "LABEL", ""]),
    classes=st.text(max_size=20),
)
def test_fuzz_condition_and_classes_flags(fuzz, condition, classes):
    """Bad --condition and --classes values are refused while parsing, before any data are read."""
    if condition in ("label", "none") and classes and all(classes.split(",")):
        return  # (a valid pair would train: the named cases below cover those)
    with tempfile.TemporaryDirectory() as tmp:
        fuzz.cli(
            "train --condition --classes",
            ["train", "--condition", condition, "--classes", classes, "--out", str(Path(tmp) / "run")],
            must_refuse=True,
            unchanged_on_failure=Path(tmp),
        )


def test_a_conditional_train_on_data_without_labels_writes_nothing(fuzz, tmp_path):
    data = tmp_path / "unlabelled.npz"
    np.savez(data, x=np.random.default_rng(0).random((40, 4, 4)).astype(np.float32))
    out = tmp_path / "runs"
    out.mkdir()
    result = fuzz.cli(
        "train --condition label on data without labels",
        [
            "train",
            "--data",
            f"npz:{data}",
            "--condition",
            "label",
            "--epochs",
            "1",
            "--out",
            str(out / "run"),
        ],
        must_refuse=True,
        unchanged_on_failure=out,
    )
    assert "model.condition label needs every example's label; the train, valid, test splits have none" in (
        result.stderr
    )
