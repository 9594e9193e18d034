"""The GPU side of devices: CUDA against the CPU on the same weights, training, runs that move
between CUDA and the CPU, and exact resume on CUDA. Each test skips with a reason where CUDA is
absent (CI's machines); benchmarks/gpu_check runs them on a GPU.

Monte Carlo estimates on two devices draw different noise (a CUDA generator is not the CPU's),
so they are compared within 3 sqrt(s1^2 + s2^2), never within one standard error.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import vaelab
from vaelab import devices, runs
from vaelab.cli import main
from vaelab.config import RunConfig
from vaelab.data import load_data
from vaelab.estimators import elbo, log_px_importance
from vaelab.evaluate import evaluate_run
from vaelab.train import Trainer, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

SMALL = RunConfig().replace(
    data={"source": "digits"},
    model={"hidden": (32,), "latent_dim": 4},
    train={"epochs": 2, "batch_size": 64, "device": "cuda", "precision": "fp32", "compile": "off"},
)


def _metrics(run):
    drop = ("seconds", "images_per_second", "compile_seconds", "device_memory_bytes")
    lines = (run / runs.METRICS).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines]


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda") / "run"
    train(SMALL, out, progress=False)
    return out


def _within(a_mean, a_se, b_mean, b_se):
    return abs(a_mean - b_mean) <= 3 * math.sqrt(a_se**2 + b_se**2)


def test_the_elbo_and_log_px_agree_between_cuda_and_the_cpu(cuda_run):
    x = load_data(SMALL.data).inputs("test")
    on = {name: vaelab.load(cuda_run, device=name) for name in ("cpu", "cuda")}
    per_example = {}
    for name, model in on.items():
        generator = devices.make_generator(devices.model_device(model), 0)
        with torch.no_grad():
            e = elbo(model, x.to(devices.model_device(model)), k=50, generator=generator).double().cpu()
        estimate = log_px_importance(model, x.to(devices.model_device(model)), k=500, generator=generator)
        per_example[name] = (e, estimate.value.double().cpu(), estimate.stderr.double().cpu())
    (e_cpu, v_cpu, s_cpu), (e_gpu, v_gpu, s_gpu) = per_example["cpu"], per_example["cuda"]
    n = len(x)
    elbo_se = [float(e.std() / math.sqrt(n)) for e in (e_cpu, e_gpu)]  # (over examples and samples)
    assert _within(float(e_cpu.mean()), elbo_se[0], float(e_gpu.mean()), elbo_se[1])
    se = [float(s.square().sum().sqrt() / n) for s in (s_cpu, s_gpu)]
    assert _within(float(v_cpu.mean()), se[0], float(v_gpu.mean()), se[1])


def test_training_on_cuda_steps_and_records_where(cuda_run):
    info = runs.run_info(cuda_run)
    assert info["environment"]["device"].startswith("cuda:0 (")
    assert info["environment"]["cuda"] == torch.version.cuda
    first = json.loads((cuda_run / runs.METRICS).read_text().splitlines()[0])
    assert first["device_memory_bytes"] > 0 and math.isfinite(first["train_elbo_nats"])
    assert "resident on cuda:0" in info["settings"]["data"]


def test_a_cuda_run_evaluates_plots_and_resumes_on_the_cpu(cuda_run, tmp_path):
    import shutil

    run = tmp_path / "moved"
    shutil.copytree(cuda_run, run)
    assert evaluate_run(run, k=20, device="cpu").log_px is not None
    assert (
        main(["plot", str(run), "--kind", "grid", "--device", "cpu", "--out", str(tmp_path / "g.png")]) == 0
    )
    assert main(["plot", str(run), "--kind", "all", "--device", "cuda"]) == 0
    longer = tmp_path / "longer"
    stopped = Trainer(SMALL, longer, progress=False)
    stopped.run_epoch()
    stopped.close()
    assert train(SMALL, longer, resume=True, progress=False, device="cpu").epochs == 2


def test_a_cpu_run_resumes_on_cuda(tmp_path):
    config = SMALL.replace(train={"device": "cpu"})
    stopped = Trainer(config, tmp_path / "run", progress=False)
    stopped.run_epoch()
    stopped.close()
    assert train(config, tmp_path / "run", resume=True, progress=False, device="cuda").epochs == 2


@pytest.mark.parametrize("compile", ["off", "on"])
def test_resume_on_cuda_is_exact_under_deterministic_settings(tmp_path, compile):
    config = SMALL.replace(train={"compile": compile})
    train(config, tmp_path / "straight", progress=False)  # (the trainer sets the deterministic settings)
    stopped = Trainer(config, tmp_path / "resumed", progress=False)
    stopped.run_epoch()
    stopped.close()
    train(config, tmp_path / "resumed", resume=True, progress=False)
    assert runs.run_info(tmp_path / "resumed")["environment"]["deterministic_algorithms"] is True
    assert _metrics(tmp_path / "resumed") == _metrics(tmp_path / "straight")
    straight = (tmp_path / "straight" / runs.WEIGHTS).read_bytes()
    assert (tmp_path / "resumed" / runs.WEIGHTS).read_bytes() == straight


def test_the_compiled_whole_step_is_one_cuda_graph_and_follows_the_eager_run(tmp_path):
    """`--compile on` on CUDA: forward, backward and Adam replayed as one CUDA graph (inductor
    skipped none), with the eager run's numbers (fp32; the same noise from the run's generator)."""
    from torch._dynamo.utils import counters

    counters.clear()
    eager = Trainer(SMALL, tmp_path / "eager", progress=False)
    compiled = Trainer(SMALL.replace(train={"compile": "on"}), tmp_path / "compiled", progress=False)
    assert compiled.step_loss.whole is not None
    for _ in range(2):
        a, b = eager.run_epoch(), compiled.run_epoch()
        for key in ("train_elbo_nats", "valid_elbo_nats"):
            assert b[key] == pytest.approx(a[key], abs=1e-3), key
    assert not counters["inductor"]["cudagraph_skips"], dict(counters["inductor"])
    assert counters["inductor"]["cudagraph_recorded_non_static_inputs"] > 0  # (counted as a graph records)


def test_streamed_data_give_the_resident_batches():
    x = torch.randint(0, 256, (300, 1, 8, 8), dtype=torch.uint8)
    cuda = torch.device("cuda")
    resident = devices.DeviceData(x, cuda)
    streamed = devices.DeviceData(x, cuda, resident_bytes=0)
    assert resident.resident and not streamed.resident and streamed.x.is_pinned()
    for begin in range(0, 300, 64):
        index = torch.arange(begin, min(begin + 64, 300), device=cuda)
        assert torch.equal(resident.rows(index), streamed.rows(index))
