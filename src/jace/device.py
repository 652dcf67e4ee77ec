"""Device and precision selection shared by every model wrapper in jace."""

from __future__ import annotations

import torch

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


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Pick the inference precision: bf16 on GPUs that support it, else fp16 on GPU, fp32 on CPU.

    ``dtype`` overrides the choice ("float32", "bfloat16", "float16" or a torch dtype).

    Example:
        >>> resolve_dtype(None, torch.device("cpu"))
        torch.float32
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None and dtype != "auto":
        try:
            return _DTYPES[str(dtype).lower()]
        except KeyError:
            raise ValueError(
                f"Unknown dtype {dtype!r}; use one of 'auto', 'float32', 'bfloat16', 'float16'."
            ) from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def mixed_precision_flags(device: torch.device) -> dict[str, bool]:
    """TrainingArguments flags for mixed precision: bf16 where supported on CUDA, else fp16; none on CPU."""
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
