"""The stored data -> model input transforms, and their density corrections, exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vaelab.config import DataConfig
from vaelab.data import load_data
from vaelab.data.transforms import Binarize, Dequantize, Scale, Transform


def test_scale_maps_8bit_levels_onto_the_grid_and_keeps_probabilities():
    x = torch.arange(256, dtype=torch.uint8)
    y = Transform((Scale(255),))(x)
    assert y.dtype == torch.float32
    assert torch.equal(y, torch.arange(256, dtype=torch.float32) / 255)
    assert Transform((Scale(255),)).log_det_nats((3, 4)) == 0.0


def test_no_steps_is_float32_as_stored():
    x = torch.tensor([[0.25, -3.0]], dtype=torch.float32)
    assert torch.equal(Transform()(x), x)
    assert not Transform().random


def test_dequantize_stays_in_each_level_bin_and_carries_minus_d_log_256():
    x = torch.arange(256, dtype=torch.uint8).repeat(40)
    y = Transform((Dequantize(),))(x, torch.Generator().manual_seed(0))
    assert torch.equal(torch.floor(y * 256).to(torch.uint8), x)  # y in [x/256, (x+1)/256)
    assert Transform((Dequantize(),)).log_det_nats((3, 32, 32)) == pytest.approx(
        -3072 * math.log(256), rel=1e-15
    )


def test_dequantized_uniform_density_gives_the_exact_discrete_probability():
    """The uniform density on [0, 1)^D scores every y at log 1 = 0; with the correction that is
    -D log 256, the log-probability of each 8-bit x under the uniform distribution on levels."""
    d = 5
    log_p_y = 0.0
    assert log_p_y + Transform((Dequantize(),)).log_det_nats((d,)) == pytest.approx(d * math.log(1 / 256))


def test_dequantize_evaluation_draw_is_fixed_and_training_draws_follow_the_generator():
    x = torch.randint(0, 256, (50, 7), dtype=torch.uint8)
    t = Transform((Dequantize(),))
    assert torch.equal(t(x), t(x))  # evaluation: one fixed draw
    a, b = t(x, torch.Generator().manual_seed(1)), t(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, t(x, torch.Generator().manual_seed(2)))
    assert t.random


def test_binarize_draws_only_in_training():
    p = torch.full((1000,), 0.3)
    t = Transform((Binarize(),))
    assert torch.equal(t(p), p)
    bits = t(p, torch.Generator().manual_seed(0))
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(bits.mean()) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 1000)


def test_uint8_arrays_are_stored_8bit_and_scaled_floats_are_not(tmp_path):
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", levels)
    np.save(tmp_path / "f32.npy", levels.astype(np.float32))
    u8 = load_data(DataConfig(source=f"npy:{tmp_path / 'u8.npy'}"))
    f32 = load_data(DataConfig(source=f"npy:{tmp_path / 'f32.npy'}"))
    assert u8.train.dtype == torch.uint8 and float(u8.inputs("train").max()) <= 1.0
    assert f32.train.dtype == torch.float32 and float(f32.inputs("train").max()) > 1.0  # the user's units


def test_dynamic_binarization_keeps_train_grey_and_fixes_valid_and_test_bits():
    s = load_data(DataConfig(source="digits", binarize="dynamic"))
    assert s.transform.random
    assert not set(s.train.unique().tolist()) <= {0.0, 1.0}  # grey levels, binarized per batch
    for split in ("valid", "test"):
        assert set(s.inputs(split).unique().tolist()) <= {0.0, 1.0}
    static = load_data(DataConfig(source="digits", binarize="static"))
    assert torch.equal(static.test, s.test)  # the same fixed draw either way
    assert not static.transform.random
