"""Colour and grey images in figures (issue 12): tiles, saved PNGs checked pixel by pixel, class
names in legends, and a channels-last array run through plot and report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.errors import UserError
from vaelab.viz import images
from vaelab.viz.draw import render, save_figure
from vaelab.viz.latent import latent_scatter


def png_pixels(path) -> np.ndarray:
    """A saved figure as (H, W, 3) uint8."""
    with Image.open(path) as png:
        return np.array(png.convert("RGB"))


def count_near(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 8) -> int:
    return int((np.abs(pixels.astype(int) - rgb).max(axis=-1) <= tolerance).sum())


def test_tile_keeps_rgb_as_a_colour_canvas_with_white_padding():
    x = torch.zeros(3, 3, 4, 5)
    x[:, 0] = 1.0  # pure red
    canvas = images.tile(x, ncols=3, pad=2)
    assert canvas.shape == (4, 3 * 5 + 2 * 2, 3)
    np.testing.assert_array_equal(canvas[:, :5], np.broadcast_to([1.0, 0.0, 0.0], (4, 5, 3)))
    np.testing.assert_array_equal(canvas[:, 5:7], np.ones((4, 2, 3)))  # padding: white
    assert images.tile(torch.zeros(2, 1, 4, 4)).ndim == 2  # grey: a 2-D canvas
    with pytest.raises(UserError, match=r"cannot tile images of shape \(2, 32, 32, 3\).*C 1 \(grey\) or 3"):
        images.tile(torch.zeros(2, 32, 32, 3))


def test_saved_png_shows_colour_as_colour_and_dark_grey_as_dark(tmp_path):
    red_and_blue = torch.zeros(2, 3, 8, 8)
    red_and_blue[0, 0] = red_and_blue[1, 2] = 1.0
    path = save_figure(render(images.ImageGrid(images.tile(red_and_blue), "colour")), tmp_path / "c.png")
    pixels = png_pixels(path)
    # each 8x8 image fills thousands of screen pixels of its exact colour
    assert count_near(pixels, (255, 0, 0)) > 1000 and count_near(pixels, (0, 0, 255)) > 1000

    dark = torch.full((2, 1, 8, 8), 0.25)
    dark[0] = 0.0  # a black image and a dark grey one: a dark background must stay dark
    path = save_figure(render(images.ImageGrid(images.tile(dark), "grey")), tmp_path / "g.png")
    pixels = png_pixels(path)
    black, grey = count_near(pixels, (0, 0, 0), 2), count_near(pixels, (64, 64, 64), 2)
    assert black > 1000 and grey > 1000  # an inverted map would draw them white and light grey
    assert count_near(pixels, (255, 255, 255), 0) > 0  # the white padding and page around them


def test_scatter_legend_names_the_classes(tiny_model):
    model = tiny_model(x_shape=(3, 8, 8))
    x, labels = torch.rand(12, 3, 8, 8), torch.tensor([0, 1, 2] * 4)
    scatter = latent_scatter(model, x, labels, label_names=("circles", "squares", "stars"))
    assert scatter.class_names == ("circles", "squares", "stars") and "coloured by class" in scatter.title
    legend = render(scatter).axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["circles", "squares", "stars"]
    assert legend.get_title().get_text() == "class"
    unnamed = render(latent_scatter(model, x, labels)).axes[0].get_legend()
    assert [t.get_text() for t in unnamed.get_texts()] == ["0", "1", "2"]


def test_one_dimensional_scatter_names_the_classes_on_its_axis(tiny_model):
    model = tiny_model(latent_dim=1)
    scatter = latent_scatter(
        model, torch.rand(6, 1, 8, 8), torch.tensor([0, 2] * 3), label_names=("a", "b", "c")
    )
    assert scatter.axis_labels[1] == "class" and scatter.class_names == ("a", "c")
    ax = render(scatter).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "c"]


@pytest.mark.slow
def test_a_channels_last_array_trains_and_plots_and_reports_in_colour(tmp_path, capsys):
    """Issue 12: (200, 32, 32, 3) .npy trained with x_shape [32, 32, 3], then `plot --kind
    reconstructions` and `report` died with "TypeError: Invalid shape (202, 38, 32)"."""
    from vaelab.cli import main

    rng = np.random.default_rng(0)
    x = np.zeros((200, 32, 32, 3), np.uint8)
    for i in range(200):  # a square of one saturated colour per image, on black
        top, left = rng.integers(0, 16, 2)
        x[i, top : top + 16, left : left + 16, i % 3] = 255
    np.save(tmp_path / "x.npy", x)
    run = tmp_path / "run"
    common = ["--hidden", "32", "--epochs", "1", "--batch-size", "50", "--threads", "1"]
    assert main(["train", "--data", f"npy:{tmp_path / 'x.npy'}", "--out", str(run), *common]) == 0
    assert main(["plot", str(run), "--kind", "reconstructions"]) == 0
    assert main(["report", str(run), "--k", "2"]) == 0
    capsys.readouterr()
    from vaelab import runs

    assert runs.run_info(run)["x_shape"] == [3, 32, 32]
    pixels = png_pixels(run / "figures" / "reconstructions.png")
    # the originals' saturated squares are drawn in colour: pure red, green and blue screen pixels
    assert min(count_near(pixels, rgb) for rgb in ((255, 0, 0), (0, 255, 0), (0, 0, 255))) > 100
    page = (run / "report.html").read_text()
    assert "Reconstructions: random test images" in page and page.count("data:image/png;base64,") >= 8


@pytest.mark.slow
def test_a_folder_run_names_its_classes_in_every_figure_that_has_labels(tmp_path):
    from vaelab.config import RunConfig
    from vaelab.train import train
    from vaelab.viz import FigureOptions, Run
    from vaelab.viz.figures import FIGURE_KINDS

    rng = np.random.default_rng(1)
    for k, name in enumerate(("circles", "squares")):
        (tmp_path / "shapes" / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.zeros((8, 8, 3), np.uint8)
            pixels[2:6, 2:6, k] = rng.integers(128, 256)
            Image.fromarray(pixels).save(tmp_path / "shapes" / name / f"{i}.png")
    config = RunConfig().replace(
        data={"source": f"folder:{tmp_path / 'shapes'}"},
        model={"hidden": (16,)},
        train={"epochs": 1, "batch_size": 8, "threads": 1},
    )
    train(config, tmp_path / "run", progress=False)
    run = Run(tmp_path / "run", split="train")
    assert run.model.x_shape == (3, 8, 8) and run.label_names == ("circles", "squares")
    scatter = FIGURE_KINDS["scatter"].make(run, FigureOptions(split="train"))
    assert scatter.class_names == ("circles", "squares")
    rows = FIGURE_KINDS["interpolation"].make(run, FigureOptions(split="train")).rows
    assert all(" (circles) to #" in label or " (squares) to #" in label for label in rows.row_labels)
