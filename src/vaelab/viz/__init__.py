"""What a model learned, as pictures: figure data computed without a plotting library, drawn apart.

    from vaelab.viz import Run, FigureOptions, figure_path
    from vaelab.viz.plot import plot_all, plot_run        # drawing (matplotlib)

Layout (data modules import torch and numpy only; only `draw` and `plot` import matplotlib):

- `run`: `Run`, a trained run loaded once (model, config, data split, labels, latent statistics).
- `images`: tiling, labelled rows of images, prior samples, reconstructions.
- `latent`: latent scatter, decoded grid, interpolations, traversals.
- `curves`: training curves, the ELBO decomposition.
- `figures`: the registry of figure kinds and files (`FIGURE_KINDS`, `ALL_FIGURES`), their options,
  captions and file names (`figure_path`).
- `draw`: matplotlib drawing of every figure-data type (`render`), `save_figure`.
- `plot`: `plot_run`, `plot_all` and the model-only `plot_prior_samples`, `plot_reconstructions`.

Layer rule: viz imports the core (models, data, runs, diagnostics), never `vaelab.experiments` or
the command line.
"""

from __future__ import annotations

from vaelab.viz.figures import ALL_FIGURES, FIGURE_KINDS, FigureOptions, figure_file_name, figure_path
from vaelab.viz.run import Run

__all__ = ["ALL_FIGURES", "FIGURE_KINDS", "FigureOptions", "Run", "figure_file_name", "figure_path"]
