"""Fuzz `vaelab tune`'s search space: parsed spaces of arbitrary JSON (drawn by Hypothesis)
through `search_space_from`, mutated YAML files through `read_search_space`, `--param` texts
through `parse_param`, and named hostile files (an alias bomb, deep nesting, Python tags) through
`vaelab tune --space FILE`.

An accepted space must name config fields only, with low <= high (low > 0 on a log scale) and
distinct choices; a refused one is one clean line.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.config import RunConfig
from vaelab.experiments.tune import ChoiceParam, parse_param, read_search_space, search_space_from

FUZZ = settings.get_profile("vaelab-fuzz")
BASE = RunConfig().replace(data={"source": "digits"}, train={"epochs": 1})
DEFAULTS = BASE.to_dict()
FIELDS = [f"{section}.{name}" for section, fields in DEFAULTS.items() for name in fields]
VALID_YAML = (
    "train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n"
    "model.latent_dim: {type: int, low: 2, high: 8}\n"
    "model.hidden: {type: categorical, choices: [[16], [32, 16]]}\n"
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=8)


@st.composite
def params(draw) -> object:
    kind = draw(st.sampled_from(["float", "int", "categorical", "other"]))
    if kind == "categorical":
        raw: dict = {"type": kind, "choices": draw(st.lists(VALUES, max_size=4) | VALUES)}
    else:
        raw = {"type": kind if kind != "other" else draw(st.text(max_size=6))}
        raw |= {"low": draw(SCALARS), "high": draw(SCALARS)}
        if draw(st.booleans()):
            raw["log"] = draw(SCALARS)
    if draw(st.integers(0, 9)) == 0:
        raw[draw(st.text(max_size=5))] = draw(SCALARS)
    return raw


@st.composite
def spaces(draw) -> object:
    if draw(st.integers(0, 9)) == 0:
        return draw(VALUES)
    names = st.sampled_from(FIELDS) | st.text(max_size=12)
    return draw(st.dictionaries(names, params() | VALUES, max_size=3))


def well_formed(space) -> str | None:
    for name, param in space.items():
        if name not in FIELDS:
            return f"{name}: not a field"
        if isinstance(param, ChoiceParam):
            if len({repr(c) for c in param.choices}) != len(param.choices):
                return f"{name}: repeated choices"
        elif not param.low <= param.high or (param.log and param.low <= 0):
            return f"{name}: bounds {param.low}, {param.high}, log {param.log}"
    return None


@FUZZ
@given(raw=spaces())
def test_fuzz_search_space(fuzz, raw):
    fuzz.check("tune search space", lambda: search_space_from(raw, BASE, "fuzz.yaml"), accepted=well_formed)


@FUZZ
@given(data=st.data())
def test_fuzz_search_space_file(fuzz, tmp_path_factory, data):
    text = VALID_YAML.encode()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 8))
        text = text[:at] + data.draw(st.binary(max_size=6)) + text[at + cut :]
    path = tmp_path_factory.mktemp("space") / data.draw(st.sampled_from(["space.yaml", "space.json"]))
    path.write_bytes(text)
    fuzz.check("tune space file", lambda: read_search_space(path, BASE), accepted=well_formed)


@FUZZ
@given(
    text=st.text(max_size=40)
    | st.sampled_from(["train.lr=float:1:2", "model.hidden=choice:1|2,3", "a=int:1:2:log"])
)
def test_fuzz_param_flag(fuzz, text):
    fuzz.check(
        "tune --param",
        lambda: search_space_from(dict([parse_param(text)]), BASE, "param"),
        accepted=well_formed,
    )


BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))
    + "train.lr: {type: categorical, choices: *i}\n"
)
NAMED = {
    "alias-bomb": BOMB,
    "deep-nesting": "train.lr: " + "[" * 50_000 + "]" * 50_000 + "\n",
    "python-tag": "train.lr: !!python/object/apply:os.system ['true']\n",
    "not-a-mapping": "- 1\n- 2\n",
    "empty": "",
    "binary": "\x00\xff\xfe",
}


@pytest.mark.parametrize("name", NAMED)
def test_tune_with_a_hostile_space_file(fuzz, tmp_path, name):
    path = tmp_path / "space.yaml"
    path.write_text(NAMED[name], encoding="latin-1")
    argv = ["tune", "--space", str(path), "--out", str(tmp_path / "study"), "--trials", "1"]
    command = fuzz.cli("tune --space", argv, must_refuse=True, unchanged_on_failure=tmp_path)
    assert command.outcome == "clean error", command.stderr
