"""Fuzz the run config: JSON of wrong types, NaN and infinities, deep nesting, huge numbers and
unknown keys, through `RunConfig.from_dict` (drawn by Hypothesis) and through `vaelab train
--config FILE` (named cases, each a defect the fuzzing campaign of issue 16 found).

An accepted config must be well typed (each field of its default's type, no bool for a number,
finite floats) and survive a round trip through its JSON form; a refused one is one clean line.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.config import RunConfig

FUZZ = settings.get_profile("vaelab-fuzz")
DEFAULTS = RunConfig().to_dict()


def well_typed(config: RunConfig) -> str | None:
    """A problem with an accepted config, or None."""
    values = config.to_dict()
    for section, fields in values.items():
        for name, value in fields.items():
            default = DEFAULTS[section][name]
            where = f"{section}.{name} = {value!r}"
            if isinstance(value, float) and not math.isfinite(value):
                return f"{where}: not finite"
            if (
                isinstance(value, bool) is not isinstance(default, bool)
                and value is not None
                and default is not None
            ):
                return f"{where}: a bool where {default!r} is not, or the reverse"
            if default is not None and value is not None:
                numbers = (int, float) if isinstance(default, float) else type(default)
                if not isinstance(value, numbers):
                    return f"{where}: not of the type of the default {default!r}"
            # a list holds items of its default's items' type (hidden sizes: int; trackers: str)
            item = type(default[0]) if isinstance(default, list) and default else int
            if isinstance(value, list) and not all(type(h) is item for h in value):
                return f"{where}: a list of items other than {item.__name__}"
    again = RunConfig.from_dict(json.loads(json.dumps(values)), where="round trip")
    return None if again == config else "the config changes on a round trip through JSON"


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["0.1", "1", "nan", "relu", "vae", "mlp", "none", "", "1e400"]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [(section, name) for section, fields in DEFAULTS.items() for name in fields]


@st.composite
def raw_configs(draw) -> object:
    """Mostly well-formed sections with some fields set to arbitrary JSON; sometimes unknown
    sections or keys, deep nesting, or a document that is not an object at all."""
    shape = draw(st.sampled_from(["fields", "fields", "fields", "unknown", "deep", "not an object"]))
    if shape == "not an object":
        return draw(JSON_VALUES)
    raw: dict = {}
    for section, name in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4)):
        raw.setdefault(section, {})[name] = draw(JSON_VALUES)
    if shape == "unknown":
        raw.setdefault(draw(st.sampled_from([*DEFAULTS, "extra"])), {})[draw(st.text(max_size=8))] = 1
    elif shape == "deep":
        section, name = draw(st.sampled_from(FIELDS))
        raw.setdefault(section, {})[name] = nested(
            draw(st.integers(10, 200))
        )  # deeper is a CLI case: Hypothesis prints examples
    return raw


@FUZZ
@given(raw=raw_configs())
def test_fuzz_config_from_dict(fuzz, raw):
    fuzz.check("config dict", lambda: RunConfig.from_dict(raw, where="fuzz.json"), accepted=well_typed)


@FUZZ
@given(section_field=st.sampled_from(FIELDS), value=JSON_SCALARS)
def test_fuzz_config_one_field(fuzz, section_field, value):
    section, name = section_field
    raw = {section: {name: value}}
    fuzz.check("config field", lambda: RunConfig.from_dict(raw, where="fuzz.json"), accepted=well_typed)


# Named cases through the command line: (config file text, must vaelab refuse it?)
WRONG_TYPES = {
    "dropout-string": ('{"model": {"dropout": "0.1"}}', True),
    "lr-null": ('{"train": {"lr": null}}', True),
    "lr-string": ('{"train": {"lr": "1e-3"}}', True),
    "beta-null": ('{"objective": {"beta": null}}', True),
    "ema-string": ('{"train": {"ema": "0.9"}}', True),
    "threads-string": ('{"train": {"threads": "2"}}', True),
    "activation-list": ('{"model": {"activation": ["relu"]}}', True),
    "source-number": ('{"data": {"source": 5}}', True),
    "epochs-true": ('{"train": {"epochs": true}}', True),
    "seed-string": ('{"train": {"seed": "0"}}', True),
    "seed-fraction": ('{"train": {"seed": 1.5}}', True),
    "seed-2-to-70": ('{"train": {"seed": 1180591620717411303424}}', True),
    "patience-nan": ('{"train": {"patience": NaN}}', True),
    "beta-infinity": ('{"objective": {"beta": Infinity}}', True),
    "sigma-1e400": ('{"model": {"likelihood": "gaussian", "sigma": 1e400}}', True),
    "unknown-key": ('{"model": {"latent_dims": 2}}', True),
    "unknown-section": ('{"optimizer": {}}', True),
    "unknown-key-with-a-newline": ('{"model": {"a\\nb": 1}}', True),  # the message must stay one line
    "nested-100000": ('{"model": {"hidden": ' + "[" * 100_000 + "]" * 100_000 + "}}", True),
    "not-an-object": ("[1, 2, 3]", True),
    "layers-string": ('{"model": {"layers": "2"}}', True),
    "layers-with-an-ae": ('{"model": {"layers": 2, "kind": "ae"}}', True),
    "free-bits-nan": ('{"objective": {"free_bits": NaN}}', True),
    "free-bits-with-iwae": ('{"objective": {"free_bits": 1.0, "name": "iwae", "k": 2}}', True),
}
TOO_LARGE = {  # refused by the memory estimate before anything is allocated
    "latent-dim-1e9": ('{"model": {"latent_dim": 1000000000}}', True),
    "hidden-1e8": ('{"model": {"hidden": [100000000]}}', True),
    "mog-components-1e9": ('{"model": {"prior": "mog", "prior_components": 1000000000}}', True),
    "iwae-k-1e7": ('{"objective": {"name": "iwae", "k": 10000000}}', True),
    "layers-1e9": ('{"model": {"layers": 1000000000}}', True),
    "valid": ('{"model": {"hidden": [16], "latent_dim": 2}}', False),
    "valid-two-layers": ('{"model": {"hidden": [16], "latent_dim": 2, "layers": 2}}', False),
}
CASES = [pytest.param(*case, id=name) for name, case in WRONG_TYPES.items()] + [
    pytest.param(*case, id=name) for name, case in TOO_LARGE.items()
]


@pytest.mark.parametrize("text, must_refuse", CASES)
def test_train_with_a_fuzzed_config_file(fuzz, tmp_path, tiny_npz, text, must_refuse):
    config = tmp_path / "config.json"
    config.write_text(text)
    flags = {"--data": (f"npz:{tiny_npz}", '"source"'), "--epochs": ("1", '"epochs"')}
    # a flag would override the very value under test, so a case that sets a field goes without it
    argv = [word for flag, (value, key) in flags.items() if key not in text for word in (flag, value)]
    command = fuzz.cli(
        "train --config",
        ["train", "--config", str(config), *argv, "--out", str(tmp_path / "run"), "--quiet"],
        must_refuse=must_refuse,
    )
    assert command.outcome == ("clean error" if must_refuse else "ok")
