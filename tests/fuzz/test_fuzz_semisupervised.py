"""Fuzzing what the semi-supervised model adds: `data.labels_per_class` over labels of any counts
and values, and the `codes:RUN` source over a run whose config.json or weights are damaged.

Each either loads (the labelled rows then are exactly N per class of the true labels, the others
-1; codes are finite (N, Z) float32 rows with the run's labels) or is refused with one line.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.config import DataConfig, RunConfig
from vaelab.data import load_data
from vaelab.data.labels import UNLABELLED
from vaelab.train import train

FUZZ = settings.get_profile("vaelab-fuzz")
FUZZ_RUN = settings.get_profile("vaelab-fuzz-run")


def _npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def _kept_per_class(per_class: int, true_labels: torch.Tensor | None):
    def check(splits) -> str | None:
        y = splits.train_labels
        if y is None or y.dtype != torch.int64 or bool((y < UNLABELLED).any()):
            return f"train labels {None if y is None else (y.dtype, y.min())}"
        kept = y[y >= 0]
        counts = torch.bincount(kept)
        if not bool((counts[counts > 0] == per_class).all()):
            return f"kept {counts.tolist()} labels per class, asked {per_class}"
        return None

    return check


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-semi")


@FUZZ
@given(
    labels=st.lists(st.integers(-3, 12), min_size=3, max_size=60),
    per_class=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_fuzz_labels_per_class(fuzz, work, labels, per_class, seed):
    y = np.array(labels)
    x = np.random.default_rng(0).random((len(y), 3)).astype(np.float32)
    (work / "l.npz").write_bytes(_npz(x, y))
    config = DataConfig(source=f"npz:{work / 'l.npz'}", labels_per_class=per_class, labels_seed=seed)
    fuzz.check("labels per class", lambda: load_data(config), accepted=_kept_per_class(per_class, None))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz-codes") / "m1"
    config = RunConfig().replace(
        data={"source": "digits"}, model={"hidden": (8,), "latent_dim": 2}, train={"epochs": 1, "threads": 1}
    )
    train(config, out, progress=False)
    return out


def _codes_ok(splits) -> str | None:
    for split in ("train", "valid", "test"):
        x = splits.split(split)
        if x.dtype != torch.float32 or x.ndim != 2 or not bool(x.isfinite().all()):
            return f"{split} codes {x.dtype} {tuple(x.shape)}"
        if splits.labels(split) is None or len(splits.labels(split)) != len(x):
            return f"{split} codes lost their labels"
    return None


@FUZZ_RUN
@given(
    field=st.sampled_from(["data.source", "model.latent_dim", "model.kind", "model.hidden", "data.binarize"]),
    value=st.one_of(
        st.integers(-3, 10**7), st.text(max_size=20), st.sampled_from(["m2", "ae", "codes:x", [4], []])
    ),
    per_class=st.one_of(st.none(), st.integers(1, 400)),
)
def test_fuzz_codes_of_a_damaged_run(fuzz, tiny_run, tmp_path_factory, field, value, per_class):
    import shutil

    run = tmp_path_factory.mktemp("damaged") / "m1"
    shutil.copytree(tiny_run, run)
    config = json.loads((run / "config.json").read_text())
    section, name = field.split(".")
    config[section][name] = value
    (run / "config.json").write_text(json.dumps(config))
    data = DataConfig(source=f"codes:{run}", labels_per_class=per_class)
    fuzz.check("codes:RUN", lambda: load_data(data), accepted=_codes_ok)


@FUZZ_RUN
@given(cut=st.integers(0, 400), flip=st.integers(0, 10**6))
def test_fuzz_codes_of_damaged_weights(fuzz, tiny_run, tmp_path_factory, cut, flip):
    import shutil

    run = tmp_path_factory.mktemp("weights") / "m1"
    shutil.copytree(tiny_run, run)
    weights = run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[flip % len(data)] ^= 0xFF
    weights.write_bytes(bytes(data[: len(data) - cut]))
    fuzz.check("codes:RUN weights", lambda: load_data(DataConfig(source=f"codes:{run}")), accepted=_codes_ok)
