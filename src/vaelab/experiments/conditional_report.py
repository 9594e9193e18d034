"""The report's words for a run conditional on a label (`vaelab.experiments.report`).

A conditional VAE models p(x | y), not p(x): its evaluation (`vaelab evaluate`, on the test
images with their true labels) bounds and estimates log p(x | y), and the report names every
quantity so. Its section "Conditional on the label" holds the label-swap and class-sample
figures (`vaelab.viz.conditional`).
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
    """The section of a conditional run: what its log-likelihood is, its two figures, and why the
    figures of `not_drawn` (kinds that encode or decode without a label) are not above."""
    page.section(f"{prefix}conditional", "Conditional on the label", 3)
    if not_drawn:
        page.text(
            f"Not drawn for this model: {', '.join(dict.fromkeys(not_drawn))}. Each encodes with q(z|x) or "
            "decodes with p(x|z) without a label, and a conditional model's q(z|x, y) and p(x|z, y) need "
            "one; the two figures below are those of a model given its labels (`vaelab sample RUN --label "
            "L` draws one class's samples).",
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
