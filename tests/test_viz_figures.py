"""The figure registry, file names, drawing and the layer rules; figures of a trained VAE and AE."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vaelab import runs
from vaelab.cli import main
from vaelab.errors import UserError
from vaelab.viz import ALL_FIGURES, FIGURE_KINDS, FigureOptions, Run, figure_file_name, figure_path
from vaelab.viz.curves import training_curves
from vaelab.viz.draw import render
from vaelab.viz.figures import figures_for
from vaelab.viz.plot import plot_all, plot_run

SRC = Path(__file__).resolve().parents[1] / "src" / "vaelab"
VAE_RECORD = {
    **{
        f"{split}_{term}_nats": -1.0
        for split in ("train", "valid")
        for term in ("elbo", "log_p_x_given_z", "kl")
    },
    "valid_bound_nats": -1.0,
    "bound": "ELBO",
}
AE_RECORD = {
    "train_log_p_x_given_z_nats": -1.0,
    "valid_log_p_x_given_z_nats": -1.0,
    "valid_bound_nats": -1.0,
    "bound": "reconstruction",
}


def _png_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


# ------------------------------------------------------------------------------ the registry


def test_every_registered_file_is_named_by_its_own_options():
    names = [entry.file_name for entry in ALL_FIGURES]
    assert len(set(names)) == len(names) and set(e.kind for e in ALL_FIGURES) == set(FIGURE_KINDS)
    for entry in ALL_FIGURES:
        assert figure_file_name(entry.kind, entry.options) == entry.file_name
        assert entry.caption and set(entry.changes) <= set(FIGURE_KINDS[entry.kind].reads)


def test_non_default_options_get_their_own_file_name():
    # regression: `plot --kind grid --range ...` overwrote figures/grid.png, which the report
    # then captioned as the default quantile grid
    assert (
        figure_file_name("grid", FigureOptions(z_range=(-3.0, 3.0, -3.0, 3.0))) == "grid-range_-3_3_-3_3.png"
    )
    assert figure_file_name("grid", FigureOptions(z_range=(-10.0, 5.0, -5.0, 5.0))) == "grid-wide.png"
    assert figure_file_name("grid", FigureOptions(n=11, dims=(2, 4))) == "grid-n11-z2-z4.png"  # from 1
    assert figure_file_name("scatter", FigureOptions(split="valid")) == "scatter-valid.png"
    assert figure_file_name("samples", FigureOptions(mode="sample", seed=3)) == "samples-seed3-draw.png"
    # options a figure does not read leave its name alone
    assert figure_file_name("curves", FigureOptions(n=5, seed=2)) == "curves.png"
    assert figure_file_name("grid", FigureOptions(seed=7, mode="sample")) == "grid.png"
    with pytest.raises(UserError, match="figure kind 'pie' is not one of"):
        figure_file_name("pie")


def test_figure_path_is_under_run_figures(tmp_path):
    # `vaelab sample` and `vaelab plot` are to share this default (the CLI wires it)
    assert figure_path(tmp_path, "samples") == tmp_path / "figures" / "samples.png"
    assert figure_path(tmp_path, "samples", FigureOptions(n=16)) == tmp_path / "figures" / "samples-n16.png"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n": 0}, "n must be >= 1"),  # regression: n = 0 silently meant the default
        ({"n": -3}, "n must be >= 1"),
        ({"mode": "draw"}, "mode 'draw' is not one of mean, sample"),
        ({"method": "cubic"}, "method 'cubic'"),
        ({"split": "dev"}, "split 'dev'"),
        ({"base": -1}, "base must be a row index"),
        ({"z_range": (1.0, 2.0)}, "z_range must be"),
        ({"dims": (0, 1)}, r"dims must be two latent dims numbered from 1 \(z1 is 1\)"),
    ],
)
def test_figure_options_are_checked_and_errors_name_the_field(changes, message):
    with pytest.raises(UserError, match=message) as err:
        FigureOptions(**changes)
    assert "--" not in str(err.value)
    assert FigureOptions(n=1).n == 1 and FigureOptions().n is None


def test_library_errors_never_name_command_line_flags():
    # only the CLI speaks of flags: no `UserError("--...")` in the figure or experiment modules
    for path in [*(SRC / "viz").rglob("*.py"), *(SRC / "experiments").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "UserError":
                text = ast.unparse(node.args[0]) if node.args else ""
                assert " --" not in text and "'--" not in text and '"--' not in text, (path.name, text)


# ------------------------------------------------------------------------------ drawing, layers


def test_training_curves_of_two_epochs_have_integer_epoch_ticks():
    # regression: a 2-epoch run's curves had ticks at 1.0, 1.2, ...
    for record in (VAE_RECORD, AE_RECORD):
        metrics = [{**record, "epoch": 1}, {**record, "epoch": 2}]
        curves = training_curves(metrics)
        fig = render(curves)
        assert len(fig.axes) == len(curves.panels) == (3 if record is VAE_RECORD else 1)
        for ax in fig.axes:
            low, high = ax.get_xlim()
            ticks = [t for t in ax.get_xticks() if low <= t <= high]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_data_modules_load_without_matplotlib_and_drawing_leaves_pyplot_alone():
    record = {"epoch": 1, **VAE_RECORD}
    code = (
        "import sys\n"
        "import vaelab.viz, vaelab.viz.images, vaelab.viz.latent, vaelab.viz.curves, vaelab.viz.figures\n"
        "import vaelab.diagnostics\n"
        "assert 'matplotlib' not in sys.modules, 'a figure-data module imported matplotlib'\n"
        "from vaelab.viz.draw import render\n"
        "from vaelab.viz.curves import training_curves\n"
        "from vaelab.experiments import compare, report, sweep\n"
        f"render(training_curves([{record!r}])).savefig(__import__('io').BytesIO(), format='png')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot (and its global state) was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # and nothing selects a backend for the user: no matplotlib.use() anywhere in the package
    for path in SRC.rglob("*.py"):
        assert "matplotlib.use(" not in path.read_text(), path


# The layer rules themselves (core never imports viz, experiments, the CLI or matplotlib; figure
# data never imports matplotlib; no cycles) are import-linter contracts in pyproject.toml, checked
# by `make lint`.


# ------------------------------------------------------------------------ figures of real runs


@pytest.mark.slow
def test_plot_all_draws_every_figure_of_a_trained_vae(pair, tmp_path):
    written = plot_all(pair.vae, tmp_path)
    assert list(written) == [entry.file_name for entry in figures_for(pair.vae)]
    assert "grid.png" in written and "marginals.png" not in written  # an image run's figures
    for name, path in written.items():
        assert path == tmp_path / name
        pixels = _png_pixels(path)
        assert min(pixels.shape) > 150 and pixels.std() > 10, path  # a real picture, not a blank canvas


@pytest.mark.slow
def test_autoencoder_figures_skip_the_elbo_decomposition_and_say_why(pair, tmp_path):
    written = plot_all(pair.ae, tmp_path)
    assert set(written) == {entry.file_name for entry in figures_for(pair.ae)} - {"decomposition.png"}
    with pytest.raises(UserError, match="autoencoder has no ELBO"):
        plot_run(pair.ae, "decomposition", tmp_path / "d.png")
    assert not (tmp_path / "d.png").exists()


@pytest.mark.slow
def test_plot_all_with_other_options_writes_files_named_after_them(pair, tmp_path):
    written = plot_all(pair.vae, tmp_path, FigureOptions(n=5, split="valid"))
    assert written["grid.png"] == tmp_path / "grid-valid-n5.png"
    assert written["scatter.png"] == tmp_path / "scatter-valid.png"
    assert written["curves.png"] == tmp_path / "curves.png"  # the curves read none of these options
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.slow
def test_run_loads_the_split_and_its_statistics(pair):
    run = Run(pair.vae, split="valid")
    splits = run.splits
    assert run.x.shape == splits.valid.shape and run.labels is not None and not run.deterministic
    assert run.stats.num_examples == len(splits.valid) and run.stats.kl_per_dim.shape == (2,)
    assert run.evaluation()["split"] == "test" and len(run.metrics) == pair.config.train.epochs
    base, where = run.base_code(3)
    assert base.shape == (2,) and "valid image #3" in where
    with pytest.raises(UserError, match=r"base 100000: the valid split has rows 0\.\."):
        run.base_code(100_000)
    with pytest.raises(UserError, match="split 'dev'"):
        Run(pair.vae, split="dev")


@pytest.mark.slow
def test_trained_vae_scatter_has_ten_digit_classes(pair):
    from vaelab.data import load_data
    from vaelab.viz.latent import latent_scatter

    splits = load_data(runs.read_config(pair.vae).data)
    scatter = latent_scatter(runs.load_model(pair.vae), splits.inputs("test"), splits.test_labels)
    assert scatter.classes == tuple(range(10)) and len(np.unique(scatter.colors, axis=0)) == 10
    assert np.isfinite(scatter.points).all() and scatter.points.std(0).min() > 0.1  # not collapsed


@pytest.mark.slow
def test_cli_plot_with_a_range_leaves_the_default_grid_alone(pair, tmp_path, capsys):
    run = tmp_path / "run"
    for name in (runs.CONFIG, runs.RUN, runs.WEIGHTS, runs.METRICS):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes((pair.vae / name).read_bytes())
    assert main(["plot", str(run), "--kind", "grid"]) == 0
    default = (run / "figures" / "grid.png").read_bytes()
    assert main(["plot", str(run), "--kind", "grid", "--range", "-3,3,-3,3", "--n", "11"]) == 0
    assert "grid-n11-range_-3_3_-3_3.png" in capsys.readouterr().out
    assert (run / "figures" / "grid.png").read_bytes() == default
    assert (run / "figures" / "grid-n11-range_-3_3_-3_3.png").is_file()


@pytest.mark.slow
def test_cli_plot_dims_are_numbered_from_1_as_the_figures_name_them(pair, tmp_path, capsys):
    # regression: --dims counted from 0 while every figure and printout says z1, z2
    out = tmp_path / "grid.png"
    assert (
        main(["plot", str(pair.vae), "--kind", "grid", "--dims", "2,1", "--n", "3", "--out", str(out)]) == 0
    )
    grid = FIGURE_KINDS["grid"].make(Run(pair.vae), FigureOptions(dims=(2, 1), n=3))
    assert grid.dims == (1, 0)  # z2 across, z1 up: the indices of the code's columns
    assert figure_file_name("grid", FigureOptions(dims=(2, 1))) == "grid-z2-z1.png"
    assert main(["plot", str(pair.vae), "--kind", "grid", "--dims", "0,1"]) == 2
    assert (
        "argument --dims: item 0: Input should be greater than or equal to 1, got 0"
        in capsys.readouterr().err
    )
    assert main(["plot", str(pair.vae), "--kind", "grid", "--dims", "1,3"]) == 2  # Z = 2
    assert "dims z1,z3: need two different latent dims of z1..z2" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_plot_rejects_bad_input_in_one_line(pair, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["plot", str(pair.vae), "--kind", "grid", "--range", "-10,5,-5,5", "--out", str(out)]) == 0
    assert out.is_file() and "written" in capsys.readouterr().out
    assert main(["plot", str(pair.vae), "--kind", "grid", "--range", "-10,5"]) == 2
    assert "--range" in capsys.readouterr().err
    # regression: --n 0 silently meant the default, while --n 1 was an error
    assert main(["plot", str(pair.vae), "--kind", "samples", "--n", "0"]) == 2
    assert "argument --n: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert main(["plot", str(pair.vae), "--kind", "samples", "--n", "1", "--out", str(out)]) == 0
    assert main(["plot", str(pair.vae), "--kind", "traversals", "--base", "100000"]) == 2
    assert main(["plot", str(tmp_path / "missing"), "--kind", "grid"]) == 2
    from vaelab.cli.figures import _figure_kinds

    assert set(_figure_kinds()) == set(FIGURE_KINDS) | {"all"}  # the CLI's choices come from the registry


def test_figure_kinds_have_help_and_their_default_sizes():
    for kind in FIGURE_KINDS.values():
        assert kind.help and set(kind.reads) <= {f.name for f in dataclasses.fields(FigureOptions)}
        assert (kind.default_n is None) == ("n" not in kind.reads)
