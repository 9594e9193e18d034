"""Data-parallel training on this CPU: 2 ranks (gloo on 127.0.0.1) against one process.

Tolerance: the two runs draw the same noise and see the same batches; they differ only in the
order of floating-point sums (each rank sums its rows, the all-reduce adds the ranks, DDP
averages gradients), so epoch metrics agree to a relative 1e-6 and final weights to 1e-5 after
two epochs (measured: about 1e-9 and 1e-7).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vaelab import runs
from vaelab.config import RunConfig
from vaelab.distributed import RowsDropout, World, shard_dropout
from vaelab.distributions import BatchRows, batch_rows, diagonal_normal, draw
from vaelab.models import build_model
from vaelab.train import train

TESTS = Path(__file__).resolve().parent

# dynamic binarization, dropout in both nets, IWAE's k samples and a VampPrior (whose pseudo-inputs
# pass through the encoder): every kind of noise a step draws; and a conditional model, whose
# labels each rank slices as it slices x. 1437 training rows in batches of 100 leave a last batch
# of 37, split 18/19.
FLAGS = (
    "--data digits --binarize dynamic --hidden 16 --latent-dim 2 --dropout 0.2 --objective iwae --k 3 "
    "--prior vamp --prior-components 5 --condition label --epochs 2 --batch-size 100 --threads 1 "
    "--precision fp32 --compile off --quiet"
).split()
CONFIG = RunConfig().replace(
    data={"source": "digits", "binarize": "dynamic"},
    model={
        "hidden": (16,),
        "latent_dim": 2,
        "dropout": 0.2,
        "prior": "vamp",
        "prior_components": 5,
        "condition": "label",
        "classes": tuple(str(code) for code in range(10)),  # (digits' labels, as training resolves them)
    },
    objective={"name": "iwae", "k": 3},
    # fp32: the equality is to float32 rounding; bf16 (what precision auto picks on a CPU with it)
    # rounds a rank's half batch differently from the whole batch, ~1e-4 relative
    train={"epochs": 2, "batch_size": 100, "threads": 1, "precision": "fp32", "compile": "off"},
)


def vaelab(
    *argv, module: str = "vaelab", fault: str = "", timeout: float = 120
) -> subprocess.CompletedProcess:
    """`vaelab ARGV` in a fresh process; module: what each data-parallel rank runs instead of vaelab
    (tests/ddp_fault.py, whose arguments `fault` gives in the environment)."""
    code = (
        "import functools, sys; from vaelab import distributed; from vaelab.cli import main;"
        f"distributed.launch = functools.partial(distributed.launch, module={module!r});"
        "sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS), "VAELAB_TEST_FAULT": fault}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def training_record(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")}
        for r in runs.read_metrics(run_dir)
    ]


def assert_same_training(a: Path, b: Path, *, rel: float, atol: float) -> None:
    record_a, record_b = training_record(a), training_record(b)
    assert len(record_a) == len(record_b) == 2
    for line_a, line_b in zip(record_a, record_b, strict=True):
        assert line_a.keys() == line_b.keys()
        for key, value in line_a.items():
            assert line_b[key] == (pytest.approx(value, rel=rel) if isinstance(value, float) else value), key
    weights_a, weights_b = runs.load_model(a).state_dict(), runs.load_model(b).state_dict()
    for name, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[name], tensor, rtol=0, atol=atol, msg=name)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    threads = torch.get_num_threads()
    try:
        train(CONFIG, out, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
def test_two_ranks_equal_one_process(one_process, tmp_path):
    proc = vaelab("train", "--nproc", "2", *FLAGS, "--out", tmp_path / "ddp")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("run: ") == 1  # rank 0 reports, the other rank says nothing
    assert runs.run_info(tmp_path / "ddp")["status"] == "finished"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # no staging left, one run
    assert_same_training(one_process, tmp_path / "ddp", rel=1e-6, atol=1e-5)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_under_ddp(one_process, tmp_path):
    out = tmp_path / "ddp"
    # rank 0 (the run's writer) dies by SIGKILL in epoch 2 (15 steps an epoch): the job stops
    proc = vaelab("train", "--nproc", "2", *FLAGS, "--out", out, module="ddp_fault", fault="0 20 kill")
    assert proc.returncode == 2
    assert "vaelab: error: data-parallel training: rank 0 of 2 (PID" in proc.stderr
    assert "was killed by SIGKILL first; the other ranks were stopped" in proc.stderr
    assert runs.run_info(out)["status"] == "running" and len(runs.read_metrics(out)) == 1
    proc = vaelab("train", "--nproc", "2", "--resume", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert runs.run_info(out)["status"] == "finished"
    assert_same_training(one_process, out, rel=1e-6, atol=1e-5)


@pytest.mark.slow
def test_a_hung_rank_ends_the_job_with_one_clear_error(tmp_path):
    start = time.monotonic()
    argv = ("train", "--nproc", "2", *FLAGS, "--ddp-timeout", "15", "--out", tmp_path / "r")
    proc = vaelab(*argv, module="ddp_fault", fault="1 3 hang", timeout=300)  # (a hang would time out)
    assert time.monotonic() - start < 200  # start-up, 15 s of waiting, shut-down, on a loaded machine
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("vaelab: error:")]
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (
        "vaelab: error: rank 0 of 2: lost contact with the other ranks "
        "(Timed out waiting 15000ms for recv operation to complete)"
    )
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # it failed before its first checkpoint: nothing left


def test_batch_rows_draw_the_whole_batch_noise_and_keep_their_rows():
    """eps and dropout masks of rows [start, stop) equal the rows of one draw for the whole batch."""
    loc, log_var = torch.zeros(7, 3), torch.zeros(7, 3)
    whole = draw(diagonal_normal(loc, log_var), (2,), torch.Generator().manual_seed(0))  # (2, 7, 3)
    for world in (World(0, 0, 2), World(1, 1, 2)):
        rows = world.rows(7)
        generator = torch.Generator().manual_seed(0)
        with batch_rows(rows):
            part = draw(
                diagonal_normal(loc[rows.start : rows.stop], log_var[rows.start : rows.stop]), (2,), generator
            )
        assert torch.equal(part, whole[:, rows.start : rows.stop])
    assert [World(r, r, 2).rows(7) for r in (0, 1)] == [BatchRows(7, 0, 3), BatchRows(7, 3, 7)]

    x = torch.ones(2 * 7, 4)  # k = 2 samples of 7 examples, as the decoder sees them
    torch.manual_seed(0)
    whole_mask = torch.nn.functional.dropout(x, 0.5, training=True).view(2, 7, 4)
    torch.manual_seed(0)
    with batch_rows(BatchRows(7, 3, 7)):
        part = RowsDropout(0.5, per_row=2)(torch.ones(2 * 4, 4))
    assert torch.equal(part.view(2, 4, 4), whole_mask[:, 3:7])


def test_shard_dropout_replaces_every_dropout_layer_and_no_weight():
    model = build_model(CONFIG.model, (1, 8, 8))
    names = list(model.state_dict())
    shard_dropout(model, CONFIG)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert layers and all(isinstance(m, RowsDropout) for m in layers)
    assert {m.per_row for m in model.decoder.modules() if isinstance(m, RowsDropout)} == {3}
    assert list(model.state_dict()) == names


def test_cli_refuses_what_data_parallel_training_would_ignore_or_lacks(tmp_path, capsys):
    from vaelab.cli import main

    out = tmp_path / "r"
    assert main(["train", "--data", "digits", "--ddp-timeout", "5", "--out", str(out)]) == 2
    assert "vaelab: error: --ddp-timeout: ignored (it applies to data-parallel" in capsys.readouterr().err
    assert main(["train", "--nproc", "2", "--data", "digits", "--lr", "-1", "--out", str(out)]) == 2
    assert (
        "argument --lr: Input should be greater than 0" in capsys.readouterr().err
    )  # before any rank starts
    assert not out.exists()
