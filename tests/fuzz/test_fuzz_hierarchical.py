"""Fuzzing what the hierarchical models add (issue 13): metrics.jsonl records with per-layer KLs
(`{split}_kl_layer{i}_nats`) whose keys and values are mutated, read by `runs.check_history`; each
is accepted as well formed or refused in one line, never a traceback. The new config fields
(`model.layers`, `objective.free_bits`) are fuzzed with every other field by test_fuzz_config."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab import runs

FUZZ = settings.get_profile("vaelab-fuzz")

RECORD = {
    "epoch": 1,
    "lr": 0.001,
    "train_elbo_nats": -100.0,
    "train_log_p_x_given_z_nats": -90.0,
    "train_kl_nats": 10.0,
    "train_kl_layer1_nats": 7.0,
    "train_kl_layer2_nats": 3.0,
    "seconds": 1.0,
    "images_per_second": 100.0,
    "valid_elbo_nats": -101.0,
    "valid_log_p_x_given_z_nats": -91.0,
    "valid_kl_nats": 10.0,
    "valid_kl_layer1_nats": 6.5,
    "valid_kl_layer2_nats": 3.5,
    "valid_bound_nats": -100.5,
    "bound": "IWAE k=10",
}
LAYER_KEYS = [key for key in RECORD if "_layer" in key]
KEYS = st.one_of(
    st.sampled_from(LAYER_KEYS),
    st.builds(
        "{}_kl_layer{}_nats".format,
        st.sampled_from(["train", "valid", "test", ""]),
        st.one_of(st.integers(-2, 1200).map(str), st.text(max_size=3)),
    ),
    st.text(max_size=12),
)
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.none(), st.text(max_size=4)
)


def well_formed(history: list) -> str | None:
    """A problem with an accepted history: every per-layer KL a finite float, as many in
    training as in validation, numbered 1..L."""
    record = history[0]
    layers = {k: v for k, v in record.items() if "_kl_layer" in k}
    if not all(type(v) is float and math.isfinite(v) for v in layers.values()):
        return f"a per-layer KL that is not a finite number: {layers}"
    train = sorted(k.removeprefix("train_") for k in layers if k.startswith("train_"))
    valid = sorted(k.removeprefix("valid_") for k in layers if k.startswith("valid_"))
    return None if train == valid and len(train) + len(valid) == len(layers) else f"unpaired: {layers}"


@FUZZ
@given(changes=st.dictionaries(KEYS, VALUES, max_size=3), dropped=st.sets(st.sampled_from(LAYER_KEYS)))
def test_fuzz_per_layer_metrics_records(fuzz, changes, dropped):
    record = {k: v for k, v in RECORD.items() if k not in dropped} | changes
    fuzz.check(
        "metrics.jsonl per-layer KLs",
        lambda: runs.check_history([record], lambda i: f"metrics.jsonl line {i + 1}"),
        accepted=well_formed,
    )
