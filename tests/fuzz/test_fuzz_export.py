"""Fuzzing `vaelab export` with bad run directories and bad output places: a missing or partial
run, a run file swapped for a directory, a link or garbage, a config of a family without an
exporter, and `--out` on a file, under a file, through a link. Each case either exports or exits 2
with one line, and a failing export leaves no file behind (`fuzz.cli`'s checks). Mutated files of
a whole run go through `export` in test_fuzz_run_dir.py with every other command that reads a run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.train import train

FUZZ = settings.get_profile("vaelab-fuzz-run")
TINY = RunConfig().replace(
    data={"source": "digits"}, model={"hidden": (16,), "latent_dim": 2}, train={"epochs": 1, "threads": 1}
)
RUN_FILES = (runs.CONFIG, runs.RUN, runs.WEIGHTS)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz-export") / "run"
    threads = torch.get_num_threads()
    try:
        train(TINY, out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def _remove(name: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / name).unlink()

    return damage


def _directory(name: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()

    return damage


def _link_outside(name: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        outside = run.parent / f"outside-{name}"
        shutil.move(run / name, outside)
        (run / name).symlink_to(outside)

    return damage


def _garbage(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(content)


def _config(change: Callable[[dict], dict]) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        config = json.loads((run / runs.CONFIG).read_text())
        (run / runs.CONFIG).write_text(json.dumps(change(config)))

    return damage


def _family(section: str, key: str, value) -> Callable[[dict], dict]:
    return lambda config: {**config, section: {**config[section], key: value}}


RUN_DAMAGE = st.one_of(
    st.sampled_from(RUN_FILES).map(_remove),
    st.sampled_from(RUN_FILES).map(_directory),
    st.sampled_from(RUN_FILES).map(_link_outside),
    st.builds(_garbage, st.sampled_from(RUN_FILES), st.binary(max_size=64)),
    st.builds(
        lambda section, key, value: _config(_family(section, key, value)),
        st.just("model"),
        st.sampled_from(["kind", "likelihood", "net", "prior"]),
        st.sampled_from(["hvae", "logistic", "flow", "gaussian", "ae", "conv", "vamp", "", None, 3]),
    ),
    st.just(lambda run: None),  # the intact run
)


def _place_run(kind: str, root: Path, finished: Path) -> Path:
    """Where RUN points: the run, nothing, a file, an empty directory, a link to the run, a loop."""
    run = root / "run"
    shutil.copytree(finished, run)
    places = {
        "run": run,
        "missing": root / "missing",
        "file": root / "file",
        "empty": root / "empty",
        "link": root / "link",
        "loop": root / "loop",
    }
    (root / "file").write_text("not a run")
    (root / "empty").mkdir()
    (root / "link").symlink_to(run)
    (root / "loop").symlink_to(root / "loop")
    return places[kind]


def _place_out(kind: str, root: Path) -> list[str]:
    """--out: the default, a new directory, an existing file, a path under a file, a link."""
    if kind == "default":
        return []
    (root / "elsewhere").mkdir(exist_ok=True)
    places = {
        "new": root / "exported",
        "file": root / "file",
        "under-a-file": root / "file" / "exported",
        "no-parent": root / "no" / "exported",
        "link": root / "out-link",
    }
    if kind == "link" and not places["link"].is_symlink():
        places["link"].symlink_to(root / "elsewhere")
    return ["--out", str(places[kind])]


@FUZZ
@given(
    damage=RUN_DAMAGE,
    run_kind=st.sampled_from(["run", "run", "run", "missing", "file", "empty", "link", "loop"]),
    out_kind=st.sampled_from(["default", "new", "file", "under-a-file", "no-parent", "link"]),
)
def test_fuzz_export_run_directories(fuzz, finished, damage, run_kind, out_kind):
    root = Path(tempfile.mkdtemp(prefix="vaelab-fuzz-export-"))
    try:
        run = _place_run(run_kind, root, finished)
        damage(root / "run")
        argv = ["export", str(run), "--check-rows", "5", *_place_out(out_kind, root)]
        must_refuse = run_kind in ("missing", "file", "empty", "loop") or out_kind in (
            "file",
            "under-a-file",
            "no-parent",
            "link",
        )
        result = fuzz.cli("export run dir", argv, must_refuse=must_refuse, unchanged_on_failure=root)
        assert result.outcome in ("ok", "clean error"), result
        assert not (root / "elsewhere").exists() or not any((root / "elsewhere").iterdir())
    finally:
        shutil.rmtree(root)
