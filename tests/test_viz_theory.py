"""The theory toolkit's figures: drawn on a Figure of their own, without pyplot."""

from __future__ import annotations

import subprocess
import sys

from matplotlib.figure import Figure

from vaelab.theory.kl import kl_directions_experiment
from vaelab.viz.theory import kl_directions_figure, plot_kl_directions


def test_plot_kl_directions_writes_png(tmp_path):
    result = kl_directions_experiment()
    fig = kl_directions_figure(result)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[0] == "p(x): Gaussian mixture"
    assert labels[1].startswith("reverse KL(q||p)") and labels[2].startswith("forward KL(p||q)")
    path = plot_kl_directions(result, tmp_path / "kl.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_theory_imports_neither_matplotlib_nor_pyplot():
    # The computation never loads matplotlib; the drawing loads it without pyplot.
    code = (
        "import sys, vaelab.theory.kl, vaelab.theory.bayes, vaelab.theory.exact; "
        "assert 'matplotlib' not in sys.modules; "
        "import vaelab.viz.theory; assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
