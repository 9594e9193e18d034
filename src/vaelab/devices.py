"""Devices: `--device` resolved once, and everything that depends on where a model runs.

The nanoGPT way: a command resolves its device once (`resolve_device`), and the rest follows
from the `torch.device` it gets: the device type of one autocast context (`autocast`),
generators created on that device (`make_generator`), the global RNG of that device
(`global_rng_state`), its free memory (`free_memory_bytes`), which sizes evaluation chunks
(`chunk_budget_bytes`) and decides whether a data set lives on the device or streams to it
(`DeviceData`). No other module writes "cpu" or "cuda".

    device = resolve_device("auto")          # cuda:0 where CUDA is present, else cpu
    settings = choose_settings(device, "auto", "auto", bf16_safe=True, steps=3910, minutes=None)
    settings.precision, settings.compile, settings.why

Every path is the same code on every device: the CPU runs it in CI (`--device cpu`, `auto` on a
machine without CUDA), the GPU tests and `benchmarks/gpu_check` run it on CUDA.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vaelab.config import DeviceError
from vaelab.limits import available_memory_bytes

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""The networks' matrix-product type of each explicit precision."""

RESIDENT_FRACTION = 0.5
"""Share of a device's free memory the stored data may take and still be moved there once; above
it the data stay in (pinned) host memory and each batch is copied as it is needed."""

CHUNK_FRACTION = 0.25
"""Share of an accelerator's free memory for the largest (chunk, B, D) tensor of importance
sampling; its temporaries and the decoder's activations are a small multiple of it."""

CPU_CHUNK_BYTES = 8 * 2**20
"""The CPU's chunk budget: tensors that fit in its caches run the element-wise part of the
log-likelihood 1.5-2x faster than large ones (measured with benchmarks/nll_eval.py)."""

MAX_CHUNK_BYTES = 2 * 2**30
"""An accelerator's chunk budget stops here: larger chunks buy no speed, only memory."""

COMPILE_MIN_STEPS = 2500
"""`compile auto` compiles a run of at least this many training steps. On this project's 2-core
CPU the compiled classic step saves ~1.6 ms (bf16, batch 128) and compiling costs ~3 s with a
warm inductor cache, 21 s cold (benchmarks/README.md): 2,500 steps repay a warm compile about
1.3 times. A run with a wall-clock budget (`train.minutes`) of at least `COMPILE_MIN_MINUTES`
compiles too."""

COMPILE_MIN_MINUTES = 2.0

CUDA_BF16_MIN_FLOPS = 2e10
"""On CUDA, bf16 pays only when a step's matrix products are large enough to be bound by
arithmetic rather than by kernel launches: the classic VAE (0.5 GFLOP a step) ran at 42,400
images/s in bf16 against 56,600 in fp32 on an H200 (issue 11's table). Above 20 GFLOP a step
(e.g. batch 1024 of a 2x1000 MLP) auto picks bf16. Unmeasured by this project: no GPU was lent
to the session that set it."""

DETERMINISTIC_CUBLAS = ":4096:8"
"""cuBLAS's workspace setting under which its products are deterministic (CUDA docs); it must be
in the environment before cuBLAS starts, so `resolve_device` sets it for CUDA."""


# ------------------------------------------------------------------------------ which device


def resolve_device(spec: str | torch.device, field: str = "device") -> torch.device:
    """The torch.device of a `--device` value: auto (CUDA device 0 where CUDA is present, else the
    CPU), cpu, cuda, cuda:N or mps. An absent device is a `DeviceError` naming `field`."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(spec, "no MPS (Apple GPU) device is available on this machine", field)
        return torch.device("mps")
    kind, _, index = spec.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise DeviceError(spec, "expected auto, cpu, cuda, cuda:N or mps", field)
    if not torch.cuda.is_available():
        raise DeviceError(spec, "no CUDA device is available on this machine", field)
    count = torch.cuda.device_count()
    number = int(index or 0)
    if number >= count:
        raise DeviceError(spec, f"this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}", field)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_CUBLAS)
    return torch.device("cuda", number)


def model_device(model: Any) -> torch.device:
    """Where a model's parameters are (the CPU for a model without any)."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return torch.device("cpu") if first is None else first.device


def move_tensors(obj: Any, device: torch.device) -> Any:
    """A shallow copy of a plain object (not an nn.Module: the theory's exact models) with every
    tensor attribute moved to `device`."""
    moved = copy.copy(obj)
    for name, value in vars(obj).items():
        if isinstance(value, Tensor):
            setattr(moved, name, value.to(device))
    return moved


def describe(device: torch.device) -> str:
    """The device in words, e.g. "cuda:0 (NVIDIA H200)" or "cpu (x86_64, 2 threads)"."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({os.uname().machine}, {torch.get_num_threads()} threads)"
    return str(device)


def environment(device: torch.device) -> dict[str, Any]:
    """What run.json records of where a run trained: the device, PyTorch, CUDA and cuDNN versions
    and the settings that make its numbers reproducible there."""
    return {
        "device": describe(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        if device.type == "cuda"
        else None,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }


def make_deterministic(device: torch.device) -> None:
    """PyTorch's deterministic settings for a training process on an accelerator (the CPU's
    kernels are deterministic already), so that a resumed run repeats an uninterrupted one:
    deterministic algorithms (an operation without a deterministic kernel raises rather than
    varies), no cuDNN autotuning, and cuBLAS's deterministic workspace (`resolve_device`)."""
    if device.type != "cpu":
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


# ------------------------------------------------------------------- randomness and precision


def make_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on `device` (its draws land there without a copy), seeded."""
    return torch.Generator(device=device).manual_seed(seed)


def global_rng_state(device: torch.device) -> Tensor:
    """The state of `device`'s global RNG (dropout draws its masks from it): a uint8 tensor."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return torch.get_rng_state()


def set_global_rng_state(device: torch.device, state: Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)
    else:
        torch.set_rng_state(state)


@contextmanager
def generator_as_global_rng(generator: torch.Generator) -> Iterator[None]:
    """Let the global RNG of the generator's device stand in for `generator` inside the block
    (a compiled graph cannot take a generator): its state goes in, the advanced state comes back
    out to the generator, and the global RNG is restored."""
    device = generator.device
    saved = global_rng_state(device)
    set_global_rng_state(device, generator.get_state())
    try:
        yield
    finally:
        generator.set_state(global_rng_state(device))
        set_global_rng_state(device, saved)


def autocast(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """The one autocast context: the networks' products in bf16 or fp16 on `device`; fp32 is no
    autocast at all. Log-probabilities stay float32 (the models cast their outputs)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16's loss scaling (its 5-bit exponent underflows small gradients); None otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices in hardware (CPU: AVX-512 BF16 or AMX, which
    oneDNN uses; CUDA: compute capability 8.0 and up)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


@dataclass(frozen=True)
class Settings:
    """The precision and compilation a run uses, and why (`why` is recorded in the run)."""

    precision: str  # fp32, bf16 or fp16
    compile: bool
    why: str


def choose_settings(
    device: torch.device,
    precision: str,
    compile: str,
    *,
    bf16_safe: bool,
    steps: int,
    minutes: float | None,
    step_flops: float = 0.0,
) -> Settings:
    """Resolve `precision` (auto, fp32, bf16, fp16) and `compile` (auto, on, off) for a run of
    `steps` training steps (or a budget of `minutes`) on `device`, of a model family that says
    whether bf16 is safe for it (`bf16_safe`) and whose step multiplies `step_flops`.

    auto picks the fastest setting that does not hurt the bound: bf16 where the device has it in
    hardware, the family allows it and (on CUDA) the step is large enough not to be launch-bound;
    fp16 never (its range needs loss scaling); a compiled step for runs long enough to repay the
    compile: the whole step, forward, backward and Adam, as one graph (on CUDA replayed as one
    CUDA graph: `vaelab.train.StepLoss`). Explicit settings are kept as given.
    """
    reasons = []
    if precision == "auto":
        if not bf16_safe:
            precision, why = "fp32", "the model family keeps fp32 (bf16 would hurt its bound)"
        elif not native_bf16(device):
            precision, why = "fp32", f"{device.type} has no native bf16"
        elif device.type == "cuda" and step_flops < CUDA_BF16_MIN_FLOPS:
            precision = "fp32"
            why = f"a step of {step_flops / 1e9:.1f} GFLOP is launch-bound on a GPU: bf16 does not pay"
        else:
            precision, why = "bf16", f"{device.type} multiplies bf16 natively; log-probabilities stay fp32"
        reasons.append(f"precision auto -> {precision}: {why}")
    long_run = steps >= COMPILE_MIN_STEPS or (minutes is not None and minutes >= COMPILE_MIN_MINUTES)
    if compile == "auto":
        compiled = long_run and device.type != "mps"
        if device.type == "mps":
            why = "torch.compile does not target MPS"
        elif compiled:
            budget = f"a {minutes:g}-minute budget" if minutes is not None else f"{steps} steps"
            why = f"{budget} repay the one-time compile"
            if precision != "fp16":  # (fp16's loss scaling keeps the optimizer out of the graph)
                why += "; forward, backward and Adam compile to one graph"
                if device.type == "cuda":
                    why += ", replayed as one CUDA graph (kernel launches bound a small model's step there)"
        else:
            why = f"{steps} steps (< {COMPILE_MIN_STEPS}) do not repay the one-time compile"
        reasons.append(f"compile auto -> {'on' if compiled else 'off'}: {why}")
    else:
        compiled = compile == "on"
    return Settings(precision, compiled, "; ".join(reasons) or "as given")


# ------------------------------------------------------------------------------------ memory


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on `device` now (None where it cannot be told)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return available_memory_bytes()


def chunk_budget_bytes(device: torch.device) -> int:
    """Bytes for the largest (chunk, B, D) tensor of importance sampling on `device`: cache-sized
    on the CPU, a share of the free memory (capped) on an accelerator."""
    if device.type == "cpu":
        return CPU_CHUNK_BYTES
    free = free_memory_bytes(device) or 0
    return max(CPU_CHUNK_BYTES, min(MAX_CHUNK_BYTES, int(CHUNK_FRACTION * free)))


def evaluation_batch_size(device: torch.device, k: int, dims: int) -> int:
    """Examples per importance-sampling call: 100 on the CPU (its chunks stay cache-sized); on an
    accelerator as many as keep all k samples' (k, B, D) log-likelihood in one chunk budget, so
    each call is a few large kernels instead of many small ones."""
    if device.type == "cpu":
        return 100
    per_example = max(1, k * dims * 4)
    return max(1, min(10_000, chunk_budget_bytes(device) // per_example))


def peak_memory_bytes(device: torch.device) -> int | None:
    """The most memory this process's tensors took on an accelerator since the last reset."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    if device.type == "mps":
        return int(torch.mps.driver_allocated_memory())
    return None


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for honest wall-clock times)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


# -------------------------------------------------------------------------- data on a device


class DeviceData:
    """One split's stored tensor (N, *shape), as stored (uint8 stays uint8), placed for `device`.

    Resident: moved to the device once when it takes at most `RESIDENT_FRACTION` of the device's
    free memory (or `resident_bytes` when given); batches are then gathered on the device.
    Streamed otherwise: the tensor stays in host memory (pinned on CUDA, so copies can overlap
    compute) and each batch is gathered there into one of two staging buffers and copied with
    `non_blocking=True`; a buffer is reused only once the copy out of it has finished (a CUDA
    event). On the CPU the data are always resident (no copy at all).

    rows(index): the batch x[index] on the device; index: (B,) int64, on the device or the CPU.
    """

    def __init__(self, x: Tensor, device: torch.device, *, resident_bytes: int | None = None) -> None:
        self.device, self.nbytes = device, x.numel() * x.element_size()
        budget = resident_bytes
        if budget is None:
            free = free_memory_bytes(device)
            budget = None if free is None or device.type == "cpu" else int(RESIDENT_FRACTION * free)
        self.resident = (device.type == "cpu" and resident_bytes is None) or (
            budget is not None and self.nbytes <= budget
        )
        if self.resident:
            self.x = x.to(device)
        else:
            self.x = x.pin_memory() if device.type == "cuda" else x
        self._staging: list[Tensor] = []
        self._copied: list[Any] = [None, None]
        self._turn = 0

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> torch.Size:
        return self.x.shape

    def rows(self, index: Tensor) -> Tensor:
        if self.resident:  # (index_select: several times faster than x[index] on a CPU)
            return torch.index_select(self.x, 0, index.to(self.x.device))
        index = index.cpu()
        if not self._staging or len(index) > len(self._staging[0]):
            pin = self.device.type == "cuda"
            empty = torch.empty((len(index), *self.x.shape[1:]), dtype=self.x.dtype, pin_memory=pin)
            self._staging = [empty, empty.clone().pin_memory() if pin else empty.clone()]
        turn, self._turn = self._turn, 1 - self._turn
        if self._copied[turn] is not None:
            self._copied[turn].synchronize()  # the copy out of this buffer has finished
        buffer = self._staging[turn][: len(index)]
        torch.index_select(self.x, 0, index, out=buffer)
        batch = buffer.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            self._copied[turn] = torch.cuda.Event()
            self._copied[turn].record()
        else:
            batch = batch.clone()  # (the buffer is reused; a CPU "copy" would alias it)
        return batch

    def where(self) -> str:
        """Where the data live, for the run's printout."""
        size = f"{self.nbytes / 2**20:.1f} MiB ({str(self.x.dtype).removeprefix('torch.')})"
        if not self.resident:
            pinned = "pinned " if self.x.is_pinned() else ""
            return f"{size} streamed to {self.device} from {pinned}host memory"
        return f"{size} in host memory" if self.device.type == "cpu" else f"{size} resident on {self.device}"
