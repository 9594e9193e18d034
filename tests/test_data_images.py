"""Images of any size and colour (issue 12): array layouts, channels, resizing, 8-bit integer
arrays, class names, and the likelihoods refused for values they cannot fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.config import DataConfig, RunConfig
from vaelab.data import check_fits_likelihood, load_data
from vaelab.data.images import channels_first, luma
from vaelab.errors import UserError
from vaelab.limits import LimitError, Limits

rng = np.random.default_rng(0)


def load(spec, **options):
    return load_data(DataConfig(source=spec, **options))


def everything(splits) -> torch.Tensor:
    """All examples of the three splits, as stored."""
    return torch.cat([splits.train, splits.valid, splits.test])


def npy(tmp_path, array, name="x.npy") -> str:
    np.save(tmp_path / name, array)
    return f"npy:{tmp_path / name}"


# ------------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize(
    "shape, layout, x_shape",
    [
        ((30, 5, 6), "NHW", (1, 5, 6)),
        ((30, 5, 6, 1), "NHWC", (1, 5, 6)),
        ((30, 5, 6, 3), "NHWC", (3, 5, 6)),
        ((30, 1, 5, 6), "NCHW", (1, 5, 6)),
        ((30, 3, 5, 6), "NCHW", (3, 5, 6)),
        ((30, 784), "flat MNIST", (1, 28, 28)),
        ((30, 7), "table", (7,)),
    ],
)
def test_array_layouts_become_channels_first(tmp_path, shape, layout, x_shape):
    x = rng.integers(0, 256, shape).astype(np.uint8)
    s = load(npy(tmp_path, x))
    assert s.x_shape == x_shape and s.train.dtype == torch.uint8
    expected = {
        "NHW": lambda: x[:, None],
        "NHWC": lambda: x.transpose(0, 3, 1, 2),
        "NCHW": lambda: x,
        "flat MNIST": lambda: x.reshape(-1, 1, 28, 28),
        "table": lambda: x,
    }[layout]()
    # every example arrives intact, in the new layout (the split reorders rows; compare as sets)
    got = sorted(map(bytes, everything(s).numpy().reshape(len(x), -1)))
    assert got == sorted(map(bytes, expected.reshape(len(x), -1)))


@pytest.mark.parametrize(
    "shape, match",
    [
        ((10, 3, 4, 3), r"shape \(10, 3, 4, 3\) is ambiguous: axis 1 \(3\) and axis 3 \(3\)"),
        ((10, 1, 8, 4), r"shape \(10, 1, 8, 4\) is ambiguous: axis 1 \(1\) and axis 3 \(4\)"),
        ((10, 5, 6, 7), r"shape \(10, 5, 6, 7\) has no channel axis: axis 1 .* must hold 1, 3 or 4"),
        ((10, 2, 8, 8), r"has no channel axis"),
    ],
)
def test_ambiguous_and_channelless_shapes_are_refused_in_one_line(tmp_path, shape, match):
    with pytest.raises(UserError, match=match) as err:
        load(npy(tmp_path, np.zeros(shape, np.uint8)))
    assert "\n" not in str(err.value) and "x.npy" in str(err.value)


def test_channels_first_keeps_a_table_and_names_a_bad_rank():
    assert channels_first(np.zeros((4, 7)), "t").shape == (4, 7)
    with pytest.raises(UserError, match=r"t: expected an array of shape .* got \(4, 2, 2, 2, 2\)"):
        channels_first(np.zeros((4, 2, 2, 2, 2)), "t")


def test_rgba_arrays_drop_an_opaque_alpha_and_refuse_transparency_unless_asked(tmp_path):
    rgb = rng.integers(0, 256, (20, 6, 6, 3)).astype(np.uint8)
    opaque = np.concatenate([rgb, np.full((20, 6, 6, 1), 255, np.uint8)], axis=3)
    assert load(npy(tmp_path, opaque)).x_shape == (3, 6, 6)
    transparent = opaque.copy()
    transparent[3, 2, 2, 3] = 254
    spec = npy(tmp_path, transparent, "t.npy")
    with pytest.raises(UserError, match="transparent pixels, which vaelab does not model; set data.channels"):
        load(spec)
    s = load(spec, channels="rgb")
    assert s.x_shape == (3, 6, 6)
    assert sorted(map(bytes, everything(s).numpy().reshape(20, -1))) == sorted(
        map(bytes, rgb.transpose(0, 3, 1, 2).reshape(20, -1))
    )


# ------------------------------------------------------------------------------------ channels


def test_grey_conversion_of_arrays_is_pillows_luma_and_rgb_repeats_grey(tmp_path):
    rgb = rng.integers(0, 256, (12, 3, 5, 7)).astype(np.uint8)
    by_pillow = np.stack([np.asarray(Image.fromarray(a.transpose(1, 2, 0)).convert("L")) for a in rgb])
    np.testing.assert_array_equal(luma(rgb)[:, 0], by_pillow)
    floats = rgb.astype(np.float32) / 255
    np.testing.assert_allclose(
        luma(floats)[:, 0].astype(np.float64),
        (0.299 * floats[:, 0] + 0.587 * floats[:, 1] + 0.114 * floats[:, 2]).astype(np.float64),
        rtol=1e-6,
    )
    s = load(npy(tmp_path, rng.integers(0, 256, (20, 6, 6)).astype(np.uint8)), channels="rgb")
    assert s.x_shape == (3, 6, 6)
    assert torch.equal(s.train[:, 0], s.train[:, 1]) and torch.equal(s.train[:, 0], s.train[:, 2])


def shapes_folder(tmp_path, n=6, size=(10, 8), colour=True):
    """Two class sub-folders, `circles` and `squares`, of RGB (or grey) PNGs of (width, height)."""
    root = tmp_path / "shapes"
    for k, name in enumerate(("circles", "squares")):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (size[1], size[0], 3) if colour else size[::-1]).astype(np.uint8)
            pixels[0, 0] = 40 * k  # the two classes differ somewhere
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_an_rgb_folder_keeps_its_colour_and_its_class_names(tmp_path):
    root = shapes_folder(tmp_path)
    s = load(f"folder:{root}")
    assert s.x_shape == (3, 8, 10) and s.train.dtype == torch.uint8
    assert s.label_names == ("circles", "squares")
    first = root / "circles" / "0.png"
    stored = np.array(Image.open(first)).transpose(2, 0, 1)
    assert any(torch.equal(x, torch.as_tensor(stored)) for x in everything(s))
    grey = load(f"folder:{root}", channels="grey")
    assert grey.x_shape == (1, 8, 10)
    by_pillow = torch.as_tensor(np.array(Image.open(first).convert("L")))
    assert any(torch.equal(x[0], by_pillow) for x in everything(grey))


def test_a_grey_folder_stays_grey_and_a_mixed_one_becomes_rgb(tmp_path):
    root = shapes_folder(tmp_path, colour=False)
    assert load(f"folder:{root}").x_shape == (1, 8, 10)
    assert load(f"folder:{root}", channels="rgb").x_shape == (3, 8, 10)
    Image.new("RGB", (10, 8), (200, 10, 10)).save(root / "squares" / "red.png")
    s = load(f"folder:{root}")
    assert s.x_shape == (3, 8, 10)
    greys = [x for x in everything(s) if not torch.equal(x[0], x[1])]
    assert len(greys) == 1  # only the red image differs between channels; grey ones repeat theirs


def test_a_grey_palette_gif_is_grey_and_a_coloured_palette_is_colour(tmp_path):
    folder = tmp_path / "gif"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (6, 6)).astype(np.uint8)).save(folder / f"{i}.gif")
    with Image.open(folder / "0.gif") as gif:
        assert gif.mode == "P"
    assert load(f"folder:{folder}").x_shape == (1, 6, 6)
    Image.fromarray(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)).quantize(8).save(folder / "c.gif")
    assert load(f"folder:{folder}").x_shape == (3, 6, 6)


def test_transparent_pngs_are_refused_under_auto_and_drop_alpha_when_asked(tmp_path):
    folder = tmp_path / "rgba"
    folder.mkdir()
    pixels = np.full((6, 6, 4), 255, np.uint8)
    pixels[..., :3] = 90
    for i in range(3):
        Image.fromarray(pixels).save(folder / f"{i}.png")
    assert load(f"folder:{folder}").x_shape == (3, 6, 6)  # alpha fully opaque: nothing lost
    pixels[0, 0, 3] = 0
    Image.fromarray(pixels).save(folder / "hole.png")
    with pytest.raises(UserError, match=r"hole\.png: holds transparent pixels"):
        load(f"folder:{folder}")
    s = load(f"folder:{folder}", channels="grey")
    assert s.x_shape == (1, 6, 6) and set(everything(s).unique().tolist()) == {90}


# -------------------------------------------------------------------------------------- sizes


def _striped(width: int) -> Image.Image:
    """8 pixels high, `width` wide, in three vertical bands of grey 0 | 200 | 50."""
    pixels = np.zeros((8, width), np.uint8)
    third = width // 3
    pixels[:, third : 2 * third] = 200
    pixels[:, 2 * third :] = 50
    return Image.fromarray(pixels)


def test_a_folder_of_mixed_sizes_is_refused_unless_resized(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(folder / f"{i}.png")
    _striped(24).save(folder / "wide.png")
    with pytest.raises(
        UserError, match=r"wide\.png: size 24x8 differs from \S+/0\.png's 8x8; set data\.image_size"
    ):
        load(f"folder:{folder}")
    centre = load(f"folder:{folder}", image_size=8)
    assert centre.x_shape == (1, 8, 8)
    # the centre crop of the wide image is its middle band alone: every pixel 200, like the others
    assert set(everything(centre).unique().tolist()) == {200}
    stretched = load(f"folder:{folder}", image_size=8, crop="none")
    values = set(everything(stretched).unique().tolist())
    assert {0, 50, 200} <= values  # all three bands survive a stretch
    assert stretched.train.dtype == torch.uint8


def test_resizing_is_bilinear_through_pillow_and_applies_to_arrays_too(tmp_path):
    x = rng.integers(0, 256, (20, 12, 16, 3)).astype(np.uint8)
    s = load(npy(tmp_path, x), image_size=6, crop="none")
    assert s.x_shape == (3, 6, 6)
    expected = {
        bytes(np.asarray(Image.fromarray(a).resize((6, 6), Image.Resampling.BILINEAR)).transpose(2, 0, 1))
        for a in x
    }
    assert {bytes(e.numpy()) for e in everything(s)} == expected
    floats = load(npy(tmp_path, rng.random((20, 9, 9)).astype(np.float32), "f.npy"), image_size=4)
    assert floats.x_shape == (1, 4, 4) and floats.train.dtype == torch.float32
    assert 0 <= float(everything(floats).min()) and float(everything(floats).max()) <= 1  # convex


def test_image_options_apply_to_every_image_source_and_are_refused_for_tables(tmp_path):
    s = load("digits", channels="rgb", image_size=16)
    assert s.x_shape == (3, 16, 16)
    (tmp_path / "t.csv").write_text("a,b\n" + "\n".join(f"{i},{i / 2}" for i in range(20)))
    for options, field in (({"channels": "grey"}, "channels"), ({"image_size": 8}, "image_size")):
        with pytest.raises(UserError, match=rf"t\.csv: data\.{field} applies to images; .* shape \(2,\)"):
            load(f"csv:{tmp_path / 't.csv'}", **options)
    assert RunConfig().replace(data={"crop": "none"}).ignored_settings({"data.crop"}) == [
        "data.crop: ignored (it applies with image_size)"
    ]


def test_a_resize_beyond_the_element_limit_is_refused_before_allocating(tmp_path):
    folder = shapes_folder(tmp_path, n=2)
    limits = Limits(max_array_elements=4 * 3 * 64 * 64 - 1)
    with pytest.raises(LimitError, match=r"declares 49,152 elements \(shape \(4, 3, 64, 64\)\)"):
        load_data(DataConfig(source=f"folder:{folder}", image_size=64), limits)


# ---------------------------------------------------------------------------- integer arrays


def test_integer_arrays_of_levels_are_8_bit_and_scaled_like_image_files(tmp_path):
    levels = rng.integers(0, 256, (20, 4, 4)).astype(np.int64)
    levels[0, 0, 0] = 255
    s = load(npy(tmp_path, levels))
    assert s.train.dtype == torch.uint8
    torch.testing.assert_close(s.inputs("train"), s.train.to(torch.float32) / 255, rtol=0, atol=0)


@pytest.mark.parametrize(
    "values, dtype",
    [
        (np.array([0, 1]), torch.float32),  # binary data: 0/1, not levels 0 and 1/255
        (np.array([0, 300]), torch.float32),  # counts beyond 8 bits: values as given
        (np.array([-1, 3]), torch.float32),
        (np.array([0.0, 255.0]), torch.float32),  # floats are never scaled
        (np.array([0, 255]), torch.float32),  # an integer table holds counts or codes: never scaled
    ],
)
def test_other_integers_and_floats_keep_their_values(tmp_path, values, dtype):
    x = rng.choice(values, (20, 3)).astype(values.dtype)
    x[0, :2] = values
    s = load(npy(tmp_path, x), standardize="off")  # a table as it is: standardizing is tabular.py's
    assert s.train.dtype == dtype and s.transform.steps == ()
    assert set(everything(s).unique().tolist()) == set(values.astype(float).tolist())


def test_a_uint8_table_is_8_bit_as_uint8_arrays_always_are(tmp_path):
    x = rng.integers(0, 256, (20, 3)).astype(np.uint8)
    x[0, :2] = 0, 255
    s = load(npy(tmp_path, x))
    assert s.train.dtype == torch.uint8 and float(s.inputs("train").max()) <= 1


def test_npz_splits_are_recognised_together_and_keep_their_class_names(tmp_path):
    path = tmp_path / "s.npz"
    names = np.array(["cat", "dog", "emu"])
    np.savez(
        path,
        train=rng.integers(0, 256, (9, 5, 5, 3)),
        valid=np.ones((3, 5, 5, 3), np.int32),  # alone it would be binary; with train, 8-bit levels
        test=rng.integers(0, 256, (3, 5, 5, 3)).astype(np.uint8),
        train_labels=names[rng.integers(0, 3, 9)],
        valid_labels=names[:3],
        test_labels=names[::-1],
    )
    s = load(f"npz:{path}")
    assert s.x_shape == (3, 5, 5) and {s.train.dtype, s.valid.dtype, s.test.dtype} == {torch.uint8}
    assert s.label_names == ("cat", "dog", "emu") and s.test_labels.tolist() == [2, 1, 0]
    np.savez(path, train=np.zeros((3, 4)), valid=np.zeros((3, 4), np.int8), test=np.zeros((3, 4)))
    with pytest.raises(UserError, match="integer and non-integer arrays in one data set"):
        load(f"npz:{path}")


# ------------------------------------------------------------------------ fitting likelihoods


def test_float_levels_with_bernoulli_get_advice_that_leads_to_a_sensible_run(tmp_path):
    x = rng.integers(0, 256, (20, 5, 5)).astype(np.float32)
    x[0, 0, :2] = 0, 255
    s = load(npy(tmp_path, x))
    with pytest.raises(
        UserError, match=r"span \[0, 255\], but the bernoulli likelihood needs \[0, 1\]"
    ) as err:
        check_fits_likelihood(s, "bernoulli", "x.npy")
    message = str(err.value)
    assert message.index("x.astype(np.uint8)") < message.index("rescale them into [0, 1]")
    assert message.index("rescale") < message.index("likelihood gaussian and a learned sigma")
    # following each piece of advice gives data that fit
    check_fits_likelihood(s, "gaussian", "x.npy", sigma=None)
    check_fits_likelihood(
        load(npy(tmp_path, everything(s).numpy().astype(np.uint8), "u.npy")), "bernoulli", "u"
    )


def test_a_fixed_sigma_in_the_wrong_units_is_refused_the_655457102_nat_trap(tmp_path):
    """Issue 12: a 0..255 array refused for Bernoulli "(use --likelihood gaussian)", and that advice
    trained to a valid ELBO of -655457102 nats: sigma 0.1 against values 0..255."""
    x = rng.integers(0, 256, (20, 4, 4))
    x[0, 0, :2] = 0, 255
    floats = load(npy(tmp_path, x.astype(np.float32)))
    with pytest.raises(
        UserError, match=r"model\.sigma 0\.1 is a fixed noise level .* below 1/100 .*x\.astype"
    ):
        check_fits_likelihood(floats, "gaussian", "x.npy", sigma=0.1)
    check_fits_likelihood(floats, "gaussian", "x.npy", sigma=1.0)  # a sigma in the data's units
    check_fits_likelihood(load("digits"), "gaussian", "digits", sigma=1e-4)  # [0, 1]: a sharp choice
    levels = load(npy(tmp_path, x, "i.npy"))  # the array as integers: 8-bit levels now
    for likelihood, sigma in (("bernoulli", None), ("gaussian", 0.1)):
        check_fits_likelihood(levels, likelihood, "i.npy", sigma=sigma)


def test_the_cli_refuses_the_trap_before_training(tmp_path, capsys):
    from vaelab.cli import main

    np.save(tmp_path / "x.npy", rng.integers(0, 256, (20, 4, 4)).astype(np.float32))
    argv = ["train", "--data", f"npy:{tmp_path / 'x.npy'}", "--likelihood", "gaussian", "--epochs", "1"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert "vaelab: error: " in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_folder_run_from_before_channels_keeps_reading_its_images_as_grey(tmp_path):
    import json

    from vaelab import runs

    old = RunConfig().to_dict()
    del old["data"]["channels"], old["data"]["image_size"], old["data"]["crop"]
    old["data"]["source"] = "folder:images"
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert runs.read_config(tmp_path).data.channels == "grey"
    old["data"]["source"] = "npy:x.npy"  # arrays kept their channel axis before too
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert runs.read_config(tmp_path).data.channels == "auto"
