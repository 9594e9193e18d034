"""Fuzz the device option: arbitrary strings through `vaelab.devices.resolve_device` (what
every command calls with its --device), and through the config field that stores it.

An accepted spec must name a device this machine has; everything else is one clean line."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.config import RunConfig
from vaelab.devices import resolve_device

FUZZ = settings.get_profile("vaelab-fuzz")
SPECS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:99999", "cuda:-1", "mps", "CPU", "cuda:"]
    ),
    st.integers(0, 10**4).map(lambda n: f"cuda:{n}"),
)


def usable(device: torch.device) -> str | None:
    if device.type == "cpu":
        return None
    if (
        device.type == "cuda"
        and torch.cuda.is_available()
        and (device.index or 0) < torch.cuda.device_count()
    ):
        return None
    if device.type == "mps" and torch.backends.mps.is_available():
        return None
    return f"{device} accepted but not on this machine"


@FUZZ
@given(spec=SPECS)
def test_fuzz_device_specs(fuzz, spec):
    fuzz.check("device spec", lambda: resolve_device(spec), accepted=usable)


@FUZZ
@given(spec=SPECS)
def test_fuzz_device_config_field(fuzz, spec):
    fuzz.check(
        "device config field", lambda: RunConfig.from_dict({"train": {"device": spec}}, where="fuzz.json")
    )
