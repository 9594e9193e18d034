"""Every user-facing command on every model family: it works and writes what it should, or it
refuses in one line (exit 2, `vaelab: error: ...`) saying why, never a traceback.

The runs are conftest's `family_runs` (one epoch each on 8x8 digits, a small csv, a folder of colour
PNGs). Each cell runs `vaelab.cli.main` in process. Plots, reports, comparisons, ONNX exports that
work and the real explorer server are slow-marked (seconds each); every refusal and the rest are fast.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from vaelab.cli import main

FAMILIES = (
    "vae",
    "ae",
    "full",
    "iaf",
    "mog",
    "vamp",
    "hvae",
    "cvae",
    "m2",
    "m1m2",
    "tabular",
    "colour",
    "colour-cvae",
)
CONDITIONAL = ("cvae", "colour-cvae")
IMAGES = tuple(f for f in FAMILIES if f not in ("tabular", "m1m2"))  # (M1+M2's data are codes)
ONNX_REFUSED = {
    "full": "model.posterior full cannot be exported to ONNX",
    "iaf": "model.posterior iaf cannot be exported to ONNX",
    "hvae": "model.layers 2: a hierarchical model's q(z|x) and p(z) are drawn layer by layer",
    "cvae": "model.condition label cannot be exported to ONNX",
    "colour-cvae": "model.condition label cannot be exported to ONNX",
    "m2": "model.kind m2 cannot be exported to ONNX",
    "m1m2": "model.kind m2 cannot be exported to ONNX",
    "tabular": "model.likelihood mixed cannot be exported to ONNX",
}


def run(capsys, *argv) -> tuple[int, str, str]:
    """`vaelab ARGV` in process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_works(capsys, *argv) -> str:
    status, out, err = run(capsys, *argv)
    assert status == 0, err
    return out


def assert_refused(capsys, reason: str, *argv) -> None:
    """Exit 2 with one line on stderr, `vaelab: error: ...` containing `reason`."""
    status, _, err = run(capsys, *argv)
    assert status == 2, err
    assert err.startswith("vaelab: error: ") and err.count("\n") == 1, err
    assert reason in err, err


def written(out: str) -> list[Path]:
    return [Path(p) for p in re.findall(r"written: (\S+)", out)]


# ------------------------------------------------------------------------- train, evaluate


def test_every_family_trains_and_is_evaluated(family_runs):
    for name, path in family_runs.items():
        assert (path / "eval.json").is_file() and (path / "model.safetensors").is_file(), name


@pytest.mark.parametrize(
    "family, gap_rows",
    [(f, 0) for f in FAMILIES] + [pytest.param(f, 2, marks=pytest.mark.slow) for f in FAMILIES],
)
def test_evaluate_with_k_and_gap_rows(family_runs, family, gap_rows, capsys):
    """(The gap split optimizes q per row: seconds a family, so slow-marked.)"""
    argv = ("evaluate", family_runs[family], "--k", 5, "--gap-rows", gap_rows)
    out = assert_works(capsys, *argv)
    assert written(out) == [family_runs[family] / "eval.json"]
    if family in CONDITIONAL:
        assert "log p(x|y)" in out


def test_resuming_a_finished_run_is_refused(family_runs, capsys):
    assert_refused(
        capsys, "the run is already finished; nothing to resume", "train", "--resume", family_runs["vae"]
    )


# ------------------------------------------------------------------------ sample, reconstruct


@pytest.mark.parametrize("suffix", [".png", ".csv", ".npy"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sample(family_runs, family, suffix, tmp_path, capsys):
    out = tmp_path / f"samples{suffix}"
    if family in CONDITIONAL and suffix != ".png":
        assert_refused(
            capsys,
            "is a conditional run: sample its rows given a class, --label LABEL",
            "sample",
            family_runs[family],
            "--out",
            out,
            "--n",
            4,
        )
        assert_works(capsys, "sample", family_runs[family], "--out", out, "--n", 4, "--label", 1)
    else:
        assert_works(capsys, "sample", family_runs[family], "--out", out, "--n", 4)
    assert out.is_file() and out.stat().st_size > 0


@pytest.mark.parametrize("suffix", [".png", ".csv"])
@pytest.mark.parametrize("family", FAMILIES)
def test_reconstruct(family_runs, family, suffix, tmp_path, capsys):
    out = tmp_path / f"reconstructions{suffix}"
    assert_works(capsys, "reconstruct", family_runs[family], "--out", out, "--n", 4)
    assert out.is_file() and out.stat().st_size > 0


def test_label_on_a_run_without_labels_is_refused(family_runs, capsys):
    for family in ("vae", "hvae", "m2"):
        assert_refused(capsys, "is not a conditional run", "sample", family_runs[family], "--label", 1)


# ----------------------------------------------------------------------------- export


@pytest.mark.parametrize("family", sorted(ONNX_REFUSED))
def test_export_refuses_families_it_cannot_name(family_runs, family, tmp_path, capsys):
    assert_refused(capsys, ONNX_REFUSED[family], "export", family_runs[family], "--out", tmp_path / "export")
    assert not (tmp_path / "export").exists()


@pytest.mark.slow  # (torch.onnx and ONNX Runtime: seconds a family)
@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ONNX_REFUSED])
def test_export_works(family_runs, family, tmp_path, capsys):
    out = assert_works(capsys, "export", family_runs[family], "--out", tmp_path / "export", "--check-rows", 5)
    assert {p.name for p in written(out)} == {"encoder.onnx", "decoder.onnx", "model.json"}


# ------------------------------------------------------------------------- M1+M2 stacking


@pytest.mark.parametrize(
    "family, reason",
    [
        ("cvae", "model.condition label: its codes E_q[z|x, y] need each image's label"),
        ("m2", "model.kind m2: its latent is a label and a code"),
        ("m1m2", "model.kind m2: its latent is a label and a code"),
    ],
)
def test_codes_of_a_family_that_has_none_to_stack_on_is_refused(
    family_runs, family, reason, tmp_path, capsys
):
    argv = ("train", "--data", f"codes:{family_runs[family]}", "--epochs", 1, "--out", tmp_path / "run")
    assert_refused(capsys, reason, *argv)


@pytest.mark.parametrize("family", ["ae", "hvae", "iaf", "colour"])
def test_codes_of_other_families_train(family_runs, family, tmp_path, capsys):
    argv = ("train", "--data", f"codes:{family_runs[family]}", "--model", "m2", "--labels-per-class", 5)
    assert_works(capsys, *argv, "--epochs", 1, "--hidden", 8, "--quiet", "--out", tmp_path / "run")


# ---------------------------------------------------------------------------------- compare


def test_compare_a_conditional_run_with_a_plain_one(family_runs, tmp_path, capsys):
    out = tmp_path / "compare"
    assert_works(
        capsys, "compare", family_runs["cvae"], family_runs["vae"], "--out", out, "--k", 10, "--n", 5
    )
    text = (out / "compare.md").read_text()
    assert "conditional on the true label y of each example" in text  # its numbers are log p(x|y)
    assert "model.condition: 'label' vs 'none'" in text
    assert {p.name for p in out.glob("*.png")} == {
        f"compare-{n}.png" for n in ("reconstructions", "scatter", "grid", "samples")
    }


def test_an_m2_compares_with_a_plain_run_on_the_fully_labelled_data(family_runs, tmp_path, capsys):
    out = tmp_path / "compare"
    assert_works(capsys, "compare", family_runs["m2"], family_runs["vae"], "--out", out, "--k", 10, "--n", 5)
    text = (out / "compare.md").read_text()
    assert "data.labels_per_class: 10 vs None" in text
    assert re.search(r"fitted on the (\d+) train-split codes", text)


def test_compare_names_the_data_fields_that_differ(family_runs, tmp_path, capsys):
    assert_refused(
        capsys,
        "were trained on different data (data.source: 'digits' vs 'folder:",
        "compare",
        family_runs["vae"],
        family_runs["colour"],
        "--out",
        tmp_path / "c",
    )


PAIRS = [
    ("vae", "ae"),
    ("vae", "vae"),
    ("cvae", "cvae"),
    ("hvae", "vae"),
    ("full", "iaf"),
    ("mog", "vamp"),
    ("m2", "m2"),
    ("m1m2", "m1m2"),
    ("tabular", "tabular"),
    ("colour", "colour-cvae"),
]


@pytest.mark.slow  # (a probe, four figures and a report a pair: seconds)
@pytest.mark.parametrize("a, b", PAIRS)
def test_compare_and_its_report(family_runs, a, b, tmp_path, capsys):
    out = tmp_path / "compare"
    assert_works(capsys, "compare", family_runs[a], family_runs[b], "--out", out, "--k", 10, "--n", 5)
    assert (out / "compare.json").is_file() and (out / "compare.md").is_file()
    assert len(list(out.glob("compare-*.png"))) >= 3
    assert_works(capsys, "report", out)
    assert (out / "report.html").stat().st_size > 0


# ------------------------------------------------------------------------------ plot, report


@pytest.mark.slow  # (every figure of a run, then its report: seconds a family)
@pytest.mark.parametrize("family", FAMILIES)
def test_plot_all_and_report(family_runs, family, tmp_path, capsys):
    out = assert_works(
        capsys, "plot", family_runs[family], "--kind", "all", "--out", tmp_path / "figures", "--n", 4
    )
    figures = written(out)
    assert figures and all(p.is_file() for p in figures)
    report = tmp_path / "report.html"
    assert_works(capsys, "report", family_runs[family], "--out", report, "--k", 10)
    assert report.stat().st_size > 0


# ---------------------------------------------------------------------------------- explore


def png(size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), 128).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("family", [f for f in FAMILIES if f not in ("m2", "m1m2")])
def test_explore_serves_every_endpoint(family_runs, family):
    pytest.importorskip("starlette", reason="the explore extra is not installed")
    from starlette.testclient import TestClient

    from vaelab.explore.server import Explorer, load_spaces
    from vaelab.explore.settings import ExploreSettings

    settings = ExploreSettings(k=10)
    app = Explorer(load_spaces([family_runs[family]], settings), settings).app()
    with TestClient(app, base_url="http://127.0.0.1") as client:
        info = client.get("/api/runs").json()["runs"][0]
        z = [0.0] * info["latent_dim"]
        label = {"label": 0} if info["classes"] else {}
        query = "?label=0" if info["classes"] else ""
        assert client.get("/api/run/a/map").status_code == 200
        assert client.post("/api/run/a/decode", json={"z": z, **label}).status_code == 200
        assert client.post("/api/run/a/encode-example", json={"index": 1}).status_code == 200
        assert client.get("/api/run/a/example/1").status_code == 200
        strip = client.post("/api/run/a/interpolate", json={"a": z, "b": [1.0] * len(z), "n": 3, **label})
        assert strip.status_code == 200
        samples = client.post("/api/run/a/samples", json={"n": 4, **label})
        encoded = client.post(f"/api/run/a/encode{query}", content=png())
    if family == "ae":  # an AE has no prior to sample: the panel says why
        assert samples.status_code == 409 and "an autoencoder has no prior" in samples.json()["error"]
    else:
        assert samples.status_code == 200
    if family == "tabular":  # a drawing is not a table row
        assert encoded.status_code == 422 and "not grey or RGB images" in encoded.json()["error"]
    else:
        assert encoded.status_code == 200, encoded.text


@pytest.mark.parametrize("family", ["m2", "m1m2"])
def test_explore_refuses_an_m2(family_runs, family, capsys):
    assert_refused(
        capsys, "model.kind m2: its latent is a label and a code", "explore", family_runs[family], "--port", 0
    )


@pytest.mark.slow  # (the real command starts in its own process: seconds)
def test_explore_starts_on_127_0_0_1_with_several_families(family_runs):
    names = ("hvae", "colour-cvae")  # (explore shows two runs side by side)
    command = [sys.executable, "-m", "vaelab", "explore", *(str(family_runs[n]) for n in names)]
    process = subprocess.Popen(
        [*command, "--port", "0", "--k", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", process.stdout.readline())
        assert match, process.stderr.read() if process.stderr else ""
        with urllib.request.urlopen(match.group(1) + "api/runs", timeout=60) as response:
            assert [r["layers"] for r in __import__("json").loads(response.read())["runs"]] == [2, 1]
    finally:
        process.terminate()
        process.communicate(timeout=20)  # (closes both pipes)
