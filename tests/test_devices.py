"""Devices on the CPU, through the same code paths a GPU takes: `--device` resolved once (auto,
cpu, and a clean error for an absent cuda or mps), the auto precision and compilation, data
resident or streamed, runs that move between devices, and what run.json records.
(tests/test_devices_cuda.py holds the tests that need a GPU.)"""

from __future__ import annotations

import json

import pytest
import torch

import vaelab
from vaelab import devices, runs
from vaelab.cli import main
from vaelab.config import DeviceError, RunConfig
from vaelab.data import load_data
from vaelab.evaluate import evaluate_model
from vaelab.train import Trainer, train

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
NO_MPS = pytest.mark.skipif(
    torch.backends.mps.is_available(), reason="checks the error of a machine without MPS"
)

TINY = RunConfig().replace(
    data={"source": "digits"},
    model={"hidden": (16,), "latent_dim": 2},
    train={"epochs": 2, "batch_size": 64, "precision": "fp32", "compile": "off"},
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A VAE trained one epoch on digits (seconds)."""
    out = tmp_path_factory.mktemp("devices") / "run"
    train(TINY.replace(train={"epochs": 1}), out, progress=False)
    return out


def _metrics(run):
    drop = ("seconds", "images_per_second", "compile_seconds")
    lines = (run / runs.METRICS).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


# ------------------------------------------------------------------------------ resolving


@NO_CUDA
def test_auto_is_the_cpu_where_there_is_no_cuda():
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.resolve_device("cpu") == torch.device("cpu")


@NO_CUDA
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_an_absent_cuda_device_is_one_line_naming_the_field(spec):
    with pytest.raises(
        DeviceError, match=rf"^train.device: {spec}: no CUDA device is available on this machine$"
    ):
        devices.resolve_device(spec, field="train.device")


@NO_MPS
def test_an_absent_mps_device_is_one_line():
    with pytest.raises(DeviceError, match=r"^device: mps: no MPS \(Apple GPU\) device is available"):
        devices.resolve_device("mps")


@NO_CUDA
@pytest.mark.parametrize("command", [["train", "--data", "digits"], ["estimators"]])
def test_the_cli_says_device_cuda_and_exits_2(command, capsys, tmp_path):
    argv = [*command, "--device", "cuda"] + (["--out", str(tmp_path / "r")] if command[0] == "train" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "vaelab: error: --device cuda: no CUDA device is available on this machine\n"
    assert not (tmp_path / "r").exists()


def test_a_device_that_is_no_device_is_refused_under_its_flag(capsys):
    assert main(["estimators", "--device", "gpu"]) == 2
    assert "argument --device: String should match pattern" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], "auto"), (["--compile"], "on"), (["--no-compile"], "off"), (["--compile", "auto"], "auto")],
)
def test_compile_takes_auto_on_off_and_the_old_switches(parse_train, argv, expected):
    assert parse_train(*argv).train.compile == expected


def test_runs_and_config_files_with_a_boolean_compile_still_load():
    raw = RunConfig().to_dict()
    for old, new in ((True, "on"), (False, "off")):
        raw["train"]["compile"] = old
        assert RunConfig.from_dict(raw).train.compile == new


def test_precision_and_device_are_config_fields(parse_train):
    config = parse_train("--precision", "fp16", "--device", "cpu")
    assert (config.train.precision, config.train.device) == ("fp16", "cpu")
    assert RunConfig().train.precision == "auto" and RunConfig().train.device == "auto"


# ----------------------------------------------------------------------- the auto settings


def _choose(
    device="cpu", *, native=True, safe=True, steps=10_000, minutes=None, flops=0.0, p="auto", c="auto"
):
    return devices.choose_settings(
        torch.device(device), p, c, bf16_safe=safe, steps=steps, minutes=minutes, step_flops=flops
    )


@pytest.fixture
def native(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(devices, "native_bf16", lambda device: value)

    return set_native


def test_auto_on_a_cpu_with_bf16_picks_bf16_and_compiles_long_runs(native):
    native(True)
    long = _choose(steps=devices.COMPILE_MIN_STEPS)
    assert (long.precision, long.compile) == ("bf16", True)
    assert "precision auto -> bf16" in long.why and "compile auto -> on" in long.why
    short = _choose(steps=devices.COMPILE_MIN_STEPS - 1)
    assert (short.precision, short.compile) == ("bf16", False)
    assert "do not repay" in short.why
    assert _choose(steps=10, minutes=devices.COMPILE_MIN_MINUTES).compile


def test_auto_keeps_fp32_where_bf16_is_not_native_or_not_safe(native):
    native(False)
    assert _choose().precision == "fp32"
    native(True)
    unsafe = _choose(safe=False)
    assert unsafe.precision == "fp32" and "model family keeps fp32" in unsafe.why


def test_auto_on_cuda_keeps_fp32_for_a_launch_bound_step(native):
    native(True)
    assert _choose("cuda", flops=0.5e9).precision == "fp32"
    assert _choose("cuda", flops=devices.CUDA_BF16_MIN_FLOPS).precision == "bf16"


def test_explicit_settings_are_kept(native):
    native(True)
    chosen = _choose(p="fp16", c="off", steps=10**6)
    assert (chosen.precision, chosen.compile, chosen.why) == ("fp16", False, "as given")


def test_model_families_declare_bf16_safety(tiny_model):
    assert tiny_model("vae").bf16_safe
    assert not tiny_model("vae", likelihood="gaussian").bf16_safe


# -------------------------------------------------------------------------- data placement


@pytest.mark.parametrize("resident_bytes", [None, 0])
def test_data_rows_are_the_stored_rows_resident_or_streamed(resident_bytes):
    x = torch.randint(0, 256, (50, 1, 4, 4), dtype=torch.uint8)
    data = devices.DeviceData(x, torch.device("cpu"), resident_bytes=resident_bytes)
    assert data.resident == (resident_bytes is None)
    assert ("in host memory" in data.where()) == (resident_bytes is None)
    first = data.rows(torch.tensor([3, 1, 4]))
    second = data.rows(torch.tensor([1, 5, 9, 2]))
    third = data.rows(torch.tensor([6]))  # reuses the first staging buffer
    assert first.dtype == torch.uint8  # stored as uint8, transformed per batch
    assert torch.equal(first, x[[3, 1, 4]]) and torch.equal(second, x[[1, 5, 9, 2]])
    assert torch.equal(third, x[[6]])


def test_evaluation_sizes_on_a_cpu_are_cache_sized():
    cpu = torch.device("cpu")
    assert devices.evaluation_batch_size(cpu, 5000, 784) == 100
    assert devices.chunk_budget_bytes(cpu) == devices.CPU_CHUNK_BYTES


def test_the_generator_stands_in_for_the_global_rng_and_both_are_restored():
    generator = devices.make_generator(torch.device("cpu"), 3)
    expected = torch.rand(4, generator=torch.Generator().manual_seed(3))
    before = torch.get_rng_state()
    with devices.generator_as_global_rng(generator):
        drawn = torch.rand(4)
    assert torch.equal(drawn, expected)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(
        torch.rand(2, generator=generator), torch.rand(6, generator=torch.Generator().manual_seed(3))[4:]
    )


# ----------------------------------------------------------------------------------- runs


def test_an_explicit_cpu_run_is_the_auto_run_here_and_records_where_it_ran(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("auto is CUDA on this machine")
    config = TINY.replace(train={"epochs": 1})
    splits = load_data(config.data)
    train(config, tmp_path / "auto", progress=False, splits=splits)
    train(config.replace(train={"device": "cpu"}), tmp_path / "cpu", progress=False, splits=splits)
    assert _metrics(tmp_path / "auto") == _metrics(tmp_path / "cpu")
    info = runs.run_info(tmp_path / "cpu")
    assert info["environment"]["device"].startswith("cpu (")
    assert info["environment"]["torch"] == torch.__version__
    assert info["environment"]["deterministic_algorithms"] is False
    assert info["settings"] == {
        "precision": "fp32",
        "compile": "off",
        "why": "as given",
        "data": info["settings"]["data"],
    }
    assert "in host memory" in info["settings"]["data"]


def test_auto_settings_are_recorded_with_why(tmp_path):
    config = TINY.replace(train={"precision": "auto", "compile": "auto", "epochs": 1})
    train(config, tmp_path / "run", progress=False)
    why = runs.run_info(tmp_path / "run")["settings"]["why"]
    assert "precision auto -> " in why and "compile auto -> off" in why


def test_fp16_trains_with_loss_scaling_and_resumes_exactly(tmp_path):
    config = TINY.replace(train={"precision": "fp16"})
    splits = load_data(config.data)
    train(config, tmp_path / "straight", progress=False, splits=splits)
    stopped = Trainer(config, tmp_path / "resumed", progress=False, splits=splits)
    stopped.run_epoch()
    stopped.close()
    state = runs.load_state(tmp_path / "resumed" / runs.STATE)
    assert state["device"] == "cpu" and state["grad_scaler"]["scale"] > 0
    train(config, tmp_path / "resumed", resume=True, progress=False, splits=splits)
    assert _metrics(tmp_path / "resumed") == _metrics(tmp_path / "straight")
    assert (tmp_path / "resumed" / runs.WEIGHTS).read_bytes() == (
        tmp_path / "straight" / runs.WEIGHTS
    ).read_bytes()


def test_a_run_checkpointed_on_another_device_resumes_here_with_fresh_streams(tmp_path, caplog):
    """The CPU side of a CUDA -> CPU move: the same weights and optimizer, new random streams."""
    run = tmp_path / "run"
    stopped = Trainer(TINY, run, progress=False)
    stopped.run_epoch()
    stopped.close()
    state = runs.load_state(run / runs.STATE)
    # what a CUDA checkpoint holds: philox generator states of 16 bytes
    state.update(
        device="cuda",
        generator=torch.zeros(16, dtype=torch.uint8),
        global_rng=torch.zeros(16, dtype=torch.uint8),
    )
    runs.save_state(run / runs.STATE, state)
    with caplog.at_level("WARNING"):
        result = train(TINY, run, resume=True, progress=False, device="cpu")
    assert result.epochs == 2
    assert "from a checkpoint written on cuda" in caplog.text


def test_resume_takes_device_but_no_other_flag(tmp_path, capsys):
    run = tmp_path / "run"
    stopped = Trainer(TINY, run, progress=False)
    stopped.run_epoch()
    stopped.close()
    assert main(["train", "--resume", str(run), "--lr", "0.1"]) == 2
    assert "drop --lr" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--device", "cpu", "--quiet"]) == 0


def test_load_puts_the_model_on_the_device_asked_for(tiny_run):
    model = vaelab.load(tiny_run, device="cpu")
    assert devices.model_device(model) == torch.device("cpu") and not model.training
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            vaelab.load(tiny_run, device="cuda")


def test_evaluation_sized_by_the_device_is_the_evaluation_of_before(tiny_run):
    """On the CPU the automatic batch is 100 rows with cache-sized chunks: the same numbers."""
    model = vaelab.load(tiny_run)
    x = load_data(TINY.data).inputs("test")
    auto = evaluate_model(model, x, k=20, progress=False)
    explicit = evaluate_model(model, x, k=20, batch_size=100, progress=False)
    assert (auto.log_px, auto.log_px_stderr, auto.elbo) == (
        explicit.log_px,
        explicit.log_px_stderr,
        explicit.elbo,
    )


@pytest.mark.parametrize("command", ["evaluate", "reconstruct"])
def test_commands_on_a_run_take_device_cpu(command, tiny_run, tmp_path, capsys):
    extra = {"evaluate": ["--k", "5"], "reconstruct": ["--out", str(tmp_path / "r.png")]}[command]
    assert main([command, str(tiny_run), "--device", "cpu", *extra]) == 0
    assert "written:" in capsys.readouterr().out
