"""One self-contained HTML page for a run, a comparison or a sweep: `vaelab report DIR`.

    write_report("runs/demo/compare")   # -> runs/demo/compare/report.html

DIR is recognized by what it holds: `sweep.json` (a sweep), `compare.json` (a comparison, whose two
runs get their own sections too) or `config.json` + `run.json` (a run). For a run the page has its
configuration, data, the evaluation table with units and the ELBO gap, the training curves and
every figure of `vaelab.viz.plot.plot_all` with its caption from the figure registry (missing figures
and a missing evaluation are made first; a figure that does not apply says why).

The page opens offline: images are embedded as base64 `data:` URIs, the style sheet is inline,
fonts are the system's, there is no script and no external URL at all. It reads on a laptop screen
(one column, at most ~75 characters of prose per line, figures scaled to the column) and prints
cleanly (`@media print`: no navigation, figures and tables not split across pages).
"""

from __future__ import annotations

import base64
import datetime
import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vaelab
from vaelab import runs
from vaelab.config import RunConfig
from vaelab.diagnostics import active_units_rule
from vaelab.errors import UserError
from vaelab.estimators import bits_per_dim
from vaelab.evaluate import eval_path
from vaelab.experiments.compare import (
    COMPARE_FIGURES,
    Comparison,
    comparison_rows,
    format_comparison,
    resolve_run,
)
from vaelab.experiments.conditional_report import CONDITIONAL_FIGURES_NOTE, add_conditional, conditional_rows
from vaelab.experiments.evaluation import current_evaluation
from vaelab.experiments.sweep import load_sweep, plot_sweep, sweep_rows
from vaelab.viz.conditional import conditional_config
from vaelab.viz.figures import CONDITIONAL_KINDS, FIGURE_KINDS, figures_for
from vaelab.viz.plot import plot_all

log = logging.getLogger(__name__)

REPORT = "report.html"

CSS = """
:root { --ink: #1d2433; --muted: #5b6475; --rule: #d9dde5; --band: #f4f6f9; --accent: #2a5db0; }
* { box-sizing: border-box; }
html { font-size: 16px; }
body { margin: 0 auto; max-width: 74rem; padding: 1.5rem 2rem 4rem; color: var(--ink); background: #fff;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       line-height: 1.5; }
header { border-bottom: 2px solid var(--ink); margin-bottom: 1rem; }
h1 { font-size: 1.7rem; margin: 0.2rem 0 0.4rem; }
h2 { font-size: 1.35rem; margin: 2.4rem 0 0.6rem; padding-top: 0.4rem; border-top: 1px solid var(--rule); }
h3 { font-size: 1.1rem; margin: 1.6rem 0 0.4rem; }
p, li { max-width: 48rem; }
.meta { color: var(--muted); font-size: 0.9rem; margin: 0 0 0.8rem; }
nav.toc { background: var(--band); border-radius: 6px; padding: 0.6rem 1rem; font-size: 0.92rem; }
nav.toc ol { margin: 0.2rem 0; padding-left: 1.3rem; }
a { color: var(--accent); }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.92rem; }
th, td { border-bottom: 1px solid var(--rule); padding: 0.3rem 0.7rem; text-align: left;
         vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(20rem, 1fr)); gap: 0 2rem; }
figure { margin: 1.2rem 0 1.8rem; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { color: var(--muted); font-size: 0.9rem; margin-top: 0.4rem; max-width: 52rem; }
.note { border-left: 3px solid var(--accent); padding: 0.2rem 0.8rem; background: var(--band);
        max-width: 52rem; }
code { font-size: 0.9em; }
footer { margin-top: 3rem; color: var(--muted); font-size: 0.85rem; border-top: 1px solid var(--rule); }
@page { size: A4; margin: 14mm; }
@media print {
  html { font-size: 10pt; }
  body { max-width: none; padding: 0; }
  nav.toc { display: none; }
  h2 { break-before: page; border-top: none; }
  h2, h3 { break-after: avoid; }
  figure, table, .note { break-inside: avoid; page-break-inside: avoid; }
  figure img { max-height: 235mm; width: auto; border: none; }
  a { color: inherit; text-decoration: none; }
  .grid2 { display: block; }
}
"""


@dataclass
class Page:
    """An HTML page under construction: body parts and table-of-contents entries."""

    title: str
    parts: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)
    images: int = 0

    def section(self, anchor: str, title: str, level: int = 2) -> None:
        if level == 2:
            self.toc.append((anchor, title))
        self.parts.append(f'<h{level} id="{_e(anchor)}">{_e(title)}</h{level}>')

    def text(self, text: str, css: str | None = None) -> None:
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<p{cls}>{_e(text)}</p>")

    def table(self, header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> None:
        numeric = numeric or set()
        head = "".join(f"<th>{_e(h)}</th>" for h in header)
        body = "".join(
            "<tr>"
            + "".join(f"<td{' class=num' if i in numeric else ''}>{_e(c)}</td>" for i, c in enumerate(r))
            + "</tr>"
            for r in rows
        )
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, png: Path, caption: str) -> None:
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        self.images += 1
        self.parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )

    def render(self, subtitle: str) -> str:
        toc = "".join(f'<li><a href="#{_e(a)}">{_e(t)}</a></li>' for a, t in self.toc)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f'<header><h1>{_e(self.title)}</h1><p class="meta">{_e(subtitle)}</p></header>\n'
            f'<nav class="toc" aria-label="contents"><strong>Contents</strong><ol>{toc}</ol></nav>\n<main>\n'
            + "\n".join(self.parts)
            + f"\n</main>\n<footer><p>Written by vaelab {_e(vaelab.__version__)} on {stamp}. Numbers are "
            "dataset means in nats per example unless a unit says otherwise; ELBO and log p(x) are "
            "higher-is-better.</p></footer>\n</body>\n</html>\n"
        )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# ----------------------------------------------------------------------------------------- run


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def evaluation_rows(evaluation: dict[str, Any]) -> list[list[str]]:
    """(quantity, value, unit, bits per dim) rows of the evaluation table."""
    dims = evaluation.get("num_dims") or 1

    def bpd(nats: float | None) -> str:
        return "—" if nats is None else f"{bits_per_dim(-nats, dims):.4f}"

    rows = [
        [
            "E_q[log p(x|z)] (reconstruction term)",
            _fmt(evaluation.get("log_p_x_given_z")),
            "nats per example",
            bpd(evaluation.get("log_p_x_given_z")),
        ]
    ]
    if evaluation.get("elbo") is None:
        return rows
    rows.append(["KL(q(z|x) || p(z))", _fmt(evaluation.get("kl")), "nats per example", ""])
    rows.append(["ELBO", _fmt(evaluation["elbo"]), "nats per example", bpd(evaluation["elbo"])])
    for key, name in (("log_p_xz", "E_q[log p(x, z)]"), ("entropy", "H(q(z|x))")):
        value = evaluation.get(key)
        if value is None and isinstance(evaluation.get("decomposition"), dict):
            value = evaluation["decomposition"].get(key)
        if value is not None:
            rows.append([name, _fmt(value), "nats per example", ""])
    if evaluation.get("log_px") is not None:
        rows.append(
            [
                f"log p(x), importance sampled, k = {evaluation.get('k')}",
                f"{evaluation['log_px']:.3f} ± {evaluation.get('log_px_stderr') or 0:.3f}",
                "nats per example (± Monte Carlo s.e.)",
                bpd(evaluation["log_px"]),
            ]
        )
        rows.append(
            ["gap log p(x) − ELBO", _fmt(evaluation["log_px"] - evaluation["elbo"]), "nats per example", ""]
        )
    active = evaluation.get("active_units")
    if active is None and isinstance(evaluation.get("decomposition"), dict):
        active = evaluation["decomposition"].get("active_units")
    if active is not None:
        rows.append([f"active units ({active_units_rule()})", str(active), "count", ""])
    return rows


def _config_rows(config: dict[str, Any]) -> list[list[str]]:
    """(field, value) rows of a config; a field that has no effect in it says why instead of
    showing a default that never applied (`RunConfig.inapplicable`)."""
    inapplicable = RunConfig.from_dict(config).inapplicable()
    rows = []
    for section, values in config.items():
        for name, value in values.items():
            field = f"{section}.{name}"
            shown = ",".join(map(str, value)) if isinstance(value, list | tuple) else value
            if field in inapplicable:
                rows.append([field, f"— (does not apply: {inapplicable[field]})"])
            else:
                rows.append([field, "—" if shown is None else str(shown)])
    return rows


def check_run(run_dir: Path) -> None:
    """Every file of the run that a report reads, validated before the report writes anything (an
    evaluation or a figure), so that a failing report leaves no file behind."""
    run_dir = runs.check_run_dir(run_dir)
    runs.read_config(run_dir)
    runs.read_run_info(run_dir)
    runs.read_metrics(run_dir)
    if eval_path(run_dir).is_file():
        runs.read_evaluation(eval_path(run_dir))
    runs.load_model(run_dir)


def add_run(
    page: Page,
    run_dir: Path,
    *,
    k: int = 1000,
    refresh: bool = False,
    prefix: str = "",
    heading: str | None = None,
    device: str = "cpu",
) -> None:
    """Sections of one run: overview, data, config, evaluation, curves and every figure."""
    run_dir = runs.check_run_dir(run_dir)
    run_config = runs.read_config(run_dir)
    config = run_config.to_dict()
    info = runs.run_info(run_dir)
    kind = config["model"]["kind"].upper()
    name = heading or f"{kind} run {run_dir.name}"
    evaluation = current_evaluation(run_dir, k, device=device)
    figures = plot_all(run_dir, only_missing=not refresh, device=device)

    page.section(f"{prefix}overview", name)
    page.text(
        f"Directory {run_dir} · status {info.get('status')} · {info.get('epochs_done')} epochs · "
        f"{info.get('parameters', 0):,} parameters · vaelab {info.get('vaelab_version')}, "
        f"torch {info.get('torch_version')}.",
        "meta",
    )
    page.section(f"{prefix}data", "Data", 3)
    shape = "×".join(map(str, info.get("x_shape", [])))
    page.table(
        ["source", "binarization", "example shape", "train", "validation", "test"],
        [
            [
                config["data"]["source"],
                config["data"]["binarize"],
                shape,
                info.get("num_train"),
                info.get("num_valid"),
                info.get("num_test"),
            ]
        ],
        numeric={3, 4, 5},
    )
    page.section(f"{prefix}config", "Configuration", 3)
    page.table(["field", "value"], _config_rows(config))

    page.section(f"{prefix}evaluation", "Evaluation (test split)", 3)
    page.text(
        f"{evaluation.get('num_examples')} test examples of {evaluation.get('num_dims')} dimensions; "
        "bits per dimension are of the negated value (lower is better there)."
    )
    conditional = conditional_config(run_config)
    rows = evaluation_rows(evaluation)
    page.table(
        ["quantity", "value", "unit", "bits per dim"],
        conditional_rows(rows) if conditional else rows,
        numeric={1, 3},
    )
    if evaluation.get("log_det_nats"):
        page.text(
            f"Every log-density here is of the data as given, in its own units: it includes "
            f"{evaluation['log_det_nats']:.3f} nats, the change of variables of the input transform "
            "(for standardized columns −Σ log scale; rescaling a column by c moves it by −log c).",
            "note",
        )
    if evaluation.get("note"):
        page.text(f"No ELBO or log p(x): {evaluation['note']}.", "note")
    elif evaluation.get("log_px") is not None and not conditional:  # its gap: add_conditional
        gap = evaluation["log_px"] - evaluation["elbo"]
        page.text(
            f"ELBO gap: log p(x) − ELBO = {gap:.2f} nats per example. Since log p(x) = ELBO + "
            "KL(q(z|x) || p(z|x)), the gap estimates how far the encoder's Gaussian q(z|x) is from the "
            "true posterior, averaged over the test set (the price of amortized, mean-field inference).",
            "note",
        )

    page.section(f"{prefix}figures", "Figures", 3)
    if conditional:
        page.text(CONDITIONAL_FIGURES_NOTE, "note")
    deterministic = run_config.model.kind == "ae"
    skipped: set[str] = set()
    not_drawn: list[str] = []  # kinds that apply but could not be drawn (plot_all logged why)
    for entry in figures_for(run_dir):
        if entry.kind in CONDITIONAL_KINDS:  # their own section below, for a conditional run only
            continue
        if entry.file_name in figures:
            page.figure(figures[entry.file_name], entry.caption_for(deterministic, conditional))
            continue
        reason = FIGURE_KINDS[entry.kind].applies(run_dir, run_config)
        if reason is None:
            not_drawn.append(entry.kind)
        elif entry.kind not in skipped:
            skipped.add(entry.kind)
            page.text(f"No {entry.kind} figure: {reason}.", "note")
    if conditional:
        add_conditional(page, run_dir, run_config, figures, evaluation, prefix, not_drawn)


def run_report(run_dir: Path, *, k: int = 1000, refresh: bool = False, device: str = "cpu") -> Page:
    config = runs.read_config(run_dir)
    check_run(run_dir)
    page = Page(
        f"vaelab report: {config.model.kind.upper()} on {config.data.source}, Z = {config.model.latent_dim}"
    )
    add_run(page, run_dir, k=k, refresh=refresh, device=device)
    return page


# ---------------------------------------------------------------------------------- comparison


def compare_report(compare_dir: Path, *, k: int = 1000, refresh: bool = False, device: str = "cpu") -> Page:
    comparison = Comparison.from_dict(runs.read_json(compare_dir / "compare.json"))
    a, b = comparison.a, comparison.b
    page = Page(f"vaelab report: {a.label} vs {b.label} on {comparison.data}")
    page.section("comparison", "AE vs VAE: the comparison")
    page.text(
        f"Test split of {comparison.data}, {comparison.num_examples} examples. "
        + (
            "Same networks, data and training budget; only the model kind differs."
            if not comparison.differences
            else f"The runs differ in more than the model kind: {'; '.join(comparison.differences)}."
        )
    )
    page.table(
        ["quantity", "unit", a.label, b.label], [list(r) for r in comparison_rows(comparison)], numeric={2, 3}
    )
    notes = [line[2:] for line in format_comparison(comparison).splitlines() if line.startswith("- ")]
    for note in notes:
        page.text(note, "note")
    for name, figure in COMPARE_FIGURES.items():
        if name in comparison.figures and (compare_dir / comparison.figures[name]).is_file():
            page.figure(compare_dir / comparison.figures[name], figure.caption_for(comparison.tabular))
    for summary in (a, b):
        if resolve_run(compare_dir, summary.run).is_dir():
            check_run(resolve_run(compare_dir, summary.run))
    for i, summary in enumerate((a, b)):
        run_dir = resolve_run(compare_dir, summary.run)
        if not run_dir.is_dir():
            page.text(f"Run {summary.run} not found next to the comparison; its section is left out.", "note")
            continue
        heading = f"{summary.label}: the run"
        add_run(page, run_dir, k=k, refresh=refresh, prefix=f"run{i}-", heading=heading, device=device)
    return page


# --------------------------------------------------------------------------------------- sweep


def sweep_report(sweep_dir: Path) -> Page:
    result = load_sweep(sweep_dir)
    page = Page(f"vaelab report: {result.kind} sweep on {result.base_config['data']['source']}")
    page.section("sweep", f"The {result.kind} sweep")
    page.text(
        f"{len(result.points)} of {len(result.values)} points finished; every point is a run directory "
        f"under {sweep_dir}. Test-split means in nats per example; log p(x) importance sampled with "
        f"k = {result.k}."
    )
    header, rows = sweep_rows(result)
    page.table(header, rows, numeric=set(range(len(header))))
    if result.missing:
        page.text(
            f"Not finished yet: {', '.join(f'{v:g}' for v in result.missing)} (run the sweep again to "
            "resume).",
            "note",
        )
    png = sweep_dir / "sweep.png"
    if not png.is_file():
        plot_sweep(result, png)
    page.figure(png, f"The {result.kind} sweep: test-split numbers of every finished point.")
    page.section("base", "Base configuration")
    page.table(["field", "value"], _config_rows(result.base_config))
    return page


# ---------------------------------------------------------------------------------------- entry


def report_kind(target: Path) -> str:
    """'sweep', 'compare' or 'run', from the files `target` holds."""
    if not target.is_dir():
        raise UserError(f"{target}: directory not found")
    if (target / "sweep.json").is_file():
        return "sweep"
    if (target / "compare.json").is_file():
        return "compare"
    if (target / runs.CONFIG).is_file() and (target / runs.RUN).is_file():
        return "run"
    raise UserError(
        f"{target}: not a run, comparison or sweep directory (no run.json, compare.json or sweep.json)"
    )


def write_report(
    target: str | Path,
    *,
    out: str | Path | None = None,
    k: int = 1000,
    refresh: bool = False,
    device: str = "cpu",
) -> Path:
    """Write the self-contained report of `target` to `out` (default TARGET/report.html); runs
    that need an evaluation or figures run their model on `device`."""
    target = Path(target)
    kind = report_kind(target)
    if kind == "sweep":
        page = sweep_report(target)
    elif kind == "compare":
        page = compare_report(target, k=k, refresh=refresh, device=device)
    else:
        page = run_report(target, k=k, refresh=refresh, device=device)
    path = Path(out) if out is not None else target / REPORT
    figures = f"{page.images} figure{'' if page.images == 1 else 's'} embedded"
    text = page.render(f"{kind} directory {target} · {figures}")
    runs.write_text(path, text)
    return path
