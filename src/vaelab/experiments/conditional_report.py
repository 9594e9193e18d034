"""The report's words for a run conditional on a label (`vaelab.experiments.report`).

A conditional VAE models p(x | y), not p(x): its evaluation (`vaelab evaluate`, on the test
images with their true labels) bounds and estimates log p(x | y), and the report names every
quantity so. Every figure of the run is drawn given the label (the registry's conditional
captions say how); its section "Conditional on the label" holds the two figures only a conditional
model has, the label swap and the class samples (`vaelab.viz.conditional`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaelab.config import RunConfig
from vaelab.viz.figures import ALL_FIGURES, CONDITIONAL_KINDS, not_applicable

if TYPE_CHECKING:
    from vaelab.experiments.report import Page

CONDITIONAL_QUANTITIES = {
    "E_q[log p(x|z)] (reconstruction term)": "E_q[log p(x|z, y)] (reconstruction term)",
    "KL(q(z|x) || p(z))": "KL(q(z|x, y) || p(z))",
    "ELBO": "ELBO of log p(x|y)",
    "E_q[log p(x, z)]": "E_q[log p(x, z | y)]",
    "H(q(z|x))": "H(q(z|x, y))",
    "log p(x), importance sampled": "log p(x|y), importance sampled",
    "gap log p(x) − ELBO": "gap log p(x|y) − ELBO",
}
"""The evaluation table's quantities (`report.evaluation_rows`) as a conditional run states them."""


def conditional_rows(rows: list[list[str]]) -> list[list[str]]:
    """Evaluation rows with each quantity named as the conditional quantity it is."""
    renamed = []
    for quantity, *rest in rows:
        for plain, conditional in CONDITIONAL_QUANTITIES.items():
            if quantity.startswith(plain):
                quantity = conditional + quantity[len(plain) :]
                break
        renamed.append([quantity, *rest])
    return renamed


CONDITIONAL_FIGURES_NOTE = (
    "This model is conditional on the label y: every figure below encodes an image at its own label, "
    "E_q[z | x, y], and decodes under a label, E[x | z, y]; each caption says which (the grid and the "
    "traversals: one label, named in the title and the file name; the samples: each label in turn; an "
    "interpolation: its pair's own label). The figures only a conditional model has follow in "
    '"Conditional on the label".'
)
"""What the report's figure section of a conditional run says first."""

CONDITIONAL_NOTE = (
    "This model is conditional on the label: every number above is of the test images given their "
    "true labels y. log p(x|y) is not log p(x): an unconditional model's log p(x) = log Σ_y p(y) "
    "p(x|y) must also pay for the class, which this model is told, so the two are not comparable. "
    "The ELBO gap log p(x|y) − ELBO estimates E KL(q(z|x, y) || p(z|x, y))."
)


def add_conditional(
    page: Page,
    run_dir: Path,
    config: RunConfig,
    figures: dict[str, Path],
    evaluation: dict[str, Any],
    prefix: str,
    not_drawn: list[str],
) -> None:
    """The section of a conditional run: what its log-likelihood is, its two figures, and the
    figures of `not_drawn` (kinds that apply but could not be drawn: the log says why)."""
    page.section(f"{prefix}conditional", "Conditional on the label", 3)
    if not_drawn:
        page.text(
            f"Not drawn for this run: {', '.join(dict.fromkeys(not_drawn))} (vaelab plot RUN --kind KIND "
            "says why).",
            "note",
        )
    log_px = evaluation.get("log_px")
    if log_px is not None:
        page.text(
            f"Test log p(x|y) = {log_px:.3f} ± {evaluation.get('log_px_stderr') or 0:.3f} nats per "
            f"example (importance sampled, k = {evaluation.get('k')}), each image given its true label; "
            f"the ELBO gap log p(x|y) − ELBO = {log_px - evaluation['elbo']:.2f} nats per example."
        )
    page.text(CONDITIONAL_NOTE, "note")
    for entry in ALL_FIGURES:
        if entry.kind not in CONDITIONAL_KINDS:
            continue
        if entry.file_name in figures:
            page.figure(figures[entry.file_name], entry.caption)
        else:
            reason = not_applicable(run_dir, entry.kind) or "it could not be drawn (see the log)"
            page.text(f"No {entry.kind} figure: {reason}.", "note")
