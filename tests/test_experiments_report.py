"""The report: one self-contained HTML file, checked as text and in a real (headless) Chromium.

The browser test drives Debian's `chromium` with Playwright (the `chromium` fixture of
conftest.py): skipped with the reason where either is absent, a failure in CI (CI=true).
"""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from vaelab.cli import main
from vaelab.config import RunConfig
from vaelab.errors import UserError
from vaelab.experiments import compare, report, sweep
from vaelab.viz.figures import ALL_FIGURES


@pytest.fixture(scope="session")
def compare_report(pair, tmp_path_factory) -> Path:
    out = tmp_path_factory.getbasetemp() / "trained-pair" / "compare"
    if not (out / "compare.json").is_file():
        compare.compare_runs(pair.vae, pair.ae, out, k=20)
    return report.write_report(out, k=20)


class Tags(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(path: Path) -> tuple[str, list[tuple[str, dict[str, str]]]]:
    text = path.read_text(encoding="utf-8")
    parser = Tags()
    parser.feed(text)
    return text, parser.tags


@pytest.mark.slow
def test_report_is_one_self_contained_file(compare_report):
    text, tags = parse(compare_report)
    images = [attrs for tag, attrs in tags if tag == "img"]
    # 4 comparison figures, 11 of the VAE run, 10 of the AE run (it has no ELBO to decompose)
    assert len(images) == 25
    for attrs in images:
        assert attrs["src"].startswith("data:image/png;base64,") and attrs.get("alt")
        with Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))) as png:
            assert png.format == "PNG" and min(png.size) > 100
    prose = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    assert "http" not in prose and "//" not in prose and "url(" not in prose and "@import" not in prose
    assert not [tag for tag, _ in tags if tag in ("script", "link", "iframe", "object", "embed")]
    assert all(attrs["href"].startswith("#") for tag, attrs in tags if tag == "a")
    assert "@media print" in text and "break-inside: avoid" in text


@pytest.mark.slow
def test_report_has_the_tables_with_units_and_the_elbo_gap(compare_report):
    text, tags = parse(compare_report)
    for phrase in (
        "AE vs VAE: the comparison",
        "probe accuracy, logistic regression",
        "nats per example",
        "bits per dim",
        "gap log p(x) − ELBO",
        "ELBO gap: log p(x) − ELBO =",
        "Configuration",
        "model.latent_dim",
        "an autoencoder has no ELBO or log p(x)",
        "Training curves",
        "Latent manifold",
        "Gaussian quantiles",
    ):
        assert phrase in text, phrase
    anchors = {attrs["id"] for _, attrs in tags if "id" in attrs}
    assert {"comparison", "run0-overview", "run1-overview", "run0-evaluation"} <= anchors


@pytest.mark.slow
def test_run_and_sweep_reports(pair, tmp_path):
    path = report.write_report(pair.ae, out=tmp_path / "ae.html", k=20)
    text, tags = parse(path)
    assert "No ELBO or log p(x)" in text and sum(tag == "img" for tag, _ in tags) == 10
    # an AE has no prior: its decoded N(0, I) codes are not captioned as prior samples, and the
    # missing ELBO decomposition says why it is missing
    captions = [attrs["alt"] for tag, attrs in tags if tag == "img"]
    samples = {e.file_name: e for e in ALL_FIGURES}["samples.png"]
    assert samples.caption_for(True) in captions and samples.caption not in captions
    assert not any(c.startswith("Prior samples") for c in captions)
    assert "No decomposition figure: an autoencoder has no ELBO to decompose" in text

    base = RunConfig().replace(data={"source": "digits"}, model={"hidden": (16,)}, train={"epochs": 1})
    sweep.run_sweep("beta", [1.0], base, tmp_path / "sweep", k=5)
    text, tags = parse(report.write_report(tmp_path / "sweep"))
    assert "The beta sweep" in text and "KL (nats)" in text and sum(tag == "img" for tag, _ in tags) == 1


@pytest.mark.slow
def test_a_grid_drawn_with_other_options_is_not_captioned_as_the_default(pair, tmp_path):
    # regression: `plot --kind grid --range ...` overwrote figures/grid.png and the report then
    # captioned it as the default quantile grid
    run = tmp_path / "run"
    for name in ("config.json", "run.json", "model.safetensors", "metrics.jsonl", "eval.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes((pair.vae / name).read_bytes())
    assert main(["plot", str(run), "--kind", "grid", "--range", "-3,3,-3,3", "--n", "5"]) == 0
    custom = (run / "figures" / "grid-n5-range_-3_3_-3_3.png").read_bytes()
    k = json.loads((run / "eval.json").read_text())["k"]  # the evaluation stays current
    text, tags = parse(report.write_report(run, k=k))
    grid_caption = {e.file_name: e for e in ALL_FIGURES}["grid.png"].caption
    images = {attrs["alt"]: attrs["src"] for tag, attrs in tags if tag == "img"}
    assert base64.b64decode(images[grid_caption].split(",", 1)[1]) != custom
    assert base64.b64encode(custom).decode() not in text  # the custom grid is not in the report at all


def test_report_of_something_else_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(UserError, match="not a run, comparison or sweep"):
        report.write_report(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "directory not found" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_report_prints_the_path(compare_report, capsys):
    assert main(["report", str(compare_report.parent), "--k", "20"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {compare_report}"


# ------------------------------------------------------------------------------ real browser


@pytest.mark.slow
def test_report_in_headless_chromium_loads_every_image_without_console_errors(
    compare_report, watched_page, tmp_path
):
    page = watched_page.page
    page.goto(compare_report.resolve().as_uri(), wait_until="load")
    images = page.evaluate("Array.from(document.images, i => [i.complete, i.naturalWidth])")
    shot = tmp_path / "report-screenshot.png"
    page.screenshot(path=str(shot))
    printed = page.pdf(prefer_css_page_size=True)

    assert len(images) == 25
    assert all(complete and width > 0 for complete, width in images), images
    assert watched_page.errors == []
    assert [
        url for url in watched_page.requests if not url.startswith(("file:", "data:"))
    ] == []  # it opens offline
    with Image.open(shot) as image:
        assert image.size == (1280, 900)
        assert max(image.convert("L").getextrema()) - min(image.convert("L").getextrema()) > 100  # not blank
    pages = len(re.findall(rb"/Type\s*/Page[^s]", printed))
    assert printed.startswith(b"%PDF") and pages >= 10  # it prints: A4 pages of tables and figures
    (tmp_path / "report.pdf").write_bytes(printed)
    print(f"screenshot: {shot}")


def test_config_table_says_which_fields_do_not_apply():
    """A resolved default that never applied (mixtures of another likelihood, flow steps of a
    diagonal posterior) is shown as not applying, with why, not as a value the run used."""
    from vaelab.config import RunConfig
    from vaelab.experiments.report import _config_rows

    rows = dict(_config_rows(RunConfig().replace(model={"posterior": "iaf"}).to_dict()))
    assert rows["model.mixtures"] == "— (does not apply: it applies to the logistic-mixture likelihood)"
    assert rows["model.flow_steps"] != "— (does not apply: it applies to the iaf posterior)"
    assert rows["model.flow_steps"].isdigit() and rows["model.posterior"] == "iaf"
