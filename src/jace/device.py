"""Device and precision selection shared by every model wrapper in jace."""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch

#: fp32 ÷ bf16 throughput measured without native bf16 (AMD EPYC, AVX2 only, 2026-11-24, MiniLM on
#: 300 humor pairs, 1 thread: 67.7-70.6 pairs/s in fp32 against 9.0 in bf16).
BF16_SLOWDOWN_WITHOUT_NATIVE = 7.7


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX512-BF16 or AMX-BF16).

    Example:
        >>> isinstance(cpu_has_native_bf16(), bool)
        True
    """
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@functools.lru_cache(maxsize=1)
def _warn_slow_bf16() -> None:
    warnings.warn(
        f"dtype bfloat16 on a CPU without native bf16 (no AVX512-BF16 or AMX; torch capability "
        f"{torch.backends.cpu.get_cpu_capability()}) runs about {BF16_SLOWDOWN_WITHOUT_NATIVE:g}x slower than "
        "float32 (measured); leave dtype unset (fp32 on this CPU) or use dtype='float32'.",
        RuntimeWarning,
        stacklevel=3,
    )

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device`` as a :class:`torch.device`, or the best one available (cuda, mps, cpu).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device, *, cpu_bf16: bool = True) -> torch.dtype:
    """Pick the inference precision.

    * ``None`` or ``"auto"`` (the default): bf16 on GPUs that support it, else fp16 on GPU; on CPU,
      bf16 where the CPU computes it natively (AVX512-BF16 or AMX), else fp32. bf16 scores of
      trained cross-encoders correlate ≥ 0.9996 with fp32 (``docs/benchmarks.md``), the bar for a
      default. ``$JACE_CPU_DTYPE`` (e.g. ``float32``) replaces the CPU choice; ``cpu_bf16=False``
      (models whose bf16 fidelity was not measured, such as the captioner) keeps fp32 on CPU.
    * ``"float32"``, ``"bfloat16"``, ``"float16"`` or a torch dtype: exactly that. Explicit bf16 on a
      CPU without native bf16 warns once (it is several times slower there).

    Example:
        >>> resolve_dtype("float32", torch.device("cpu"))
        torch.float32
    """
    if dtype in (None, "auto") and device.type == "cpu":
        override = os.environ.get("JACE_CPU_DTYPE")
        if override:
            return resolve_dtype(override, device)
        return torch.bfloat16 if cpu_bf16 and cpu_has_native_bf16() else torch.float32
    if dtype is not None and dtype != "auto":
        if not isinstance(dtype, torch.dtype):
            try:
                dtype = _DTYPES[str(dtype).lower()]
            except KeyError:
                raise ValueError(
                    f"Unknown dtype {dtype!r}; use one of 'auto', 'float32', 'bfloat16', 'float16' (or 'int8' on CPU)."
                ) from None
        if dtype == torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
            _warn_slow_bf16()
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def resolve_precision(dtype: str | torch.dtype | None, device: torch.device) -> tuple[torch.dtype, bool]:
    """``(float dtype, int8)`` for a model wrapper: ``dtype="int8"`` means fp32 weights to be
    quantized by :mod:`jace.quantization` (CPU only); anything else goes to :func:`resolve_dtype`.

    Example:
        >>> resolve_precision("int8", torch.device("cpu"))
        (torch.float32, True)
    """
    if isinstance(dtype, str) and dtype.lower() == "int8":
        if device.type != "cpu":
            raise ValueError(f"dtype='int8' is jace's CPU path, but device is {device}; on GPU leave dtype unset (bf16/fp16).")
        return torch.float32, True
    return resolve_dtype(dtype, device), False


def mixed_precision_flags(device: torch.device) -> dict[str, bool]:
    """TrainingArguments flags for mixed precision (fp32 master weights, autocast matmuls).

    CUDA: bf16 where supported, else fp16. CPU: bf16 autocast where the CPU has native bf16 and the
    CPU inference default is bf16 (:func:`resolve_dtype`; ``$JACE_CPU_DTYPE=float32`` turns it off):
    a training step of the e5 pruner ran 1.9x faster than fp32 that way (``docs/benchmarks.md``). Else none.

    Example:
        >>> mixed_precision_flags(torch.device("mps"))
        {'bf16': False, 'fp16': False}
    """
    if device.type == "cpu":
        return {"bf16": resolve_dtype(None, device) == torch.bfloat16, "fp16": False}
    if device.type != "cuda":
        return {"bf16": False, "fp16": False}
    bf16 = torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": not bf16}


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors, which callers answer by shrinking the batch."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def empty_cache(device: torch.device) -> None:
    """Release cached accelerator memory after an OOM."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
