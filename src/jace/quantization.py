"""int8 CPU inference: PyTorch dynamic quantization of the linear layers, cached on disk.

Every ``nn.Linear`` of the encoder gets int8 weights (one scale per output channel) and runs with
activations quantized on the fly; the 1-logit head stays in fp32, so scores keep their scale.
The int8 GEMM kernel is the one PyTorch's x86 engine picks for this CPU (AVX512-VNNI, AVX2 or a
generic fallback; :func:`int8_kernel` names it). The quantized weights are cached under
``$JACE_CACHE_DIR`` (default ``~/.cache/jace``), keyed by the model's files, so a second load reads
the int8 weights and never builds them again.

Example:
    >>> client = RerankerCrossEncoderClient("runs/humor/merged", dtype="int8")  # doctest: +SKIP
    >>> int8_kernel()  # doctest: +SKIP
    'avx512_vnni'
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from jace.device import cpu_flags

HEAD_NAMES = ("classifier", "score", "out_proj", "ranking_head", "pruning_head")
_CACHE_FORMAT = "1"


def int8_kernel() -> str:
    """The int8 GEMM kernel family this CPU gives PyTorch's x86 engine: ``amx``, ``avx512_vnni``, ``avx_vnni``, ``avx2`` or ``generic``."""
    flags = cpu_flags()
    for kernel, flag in (("amx", "amx_int8"), ("avx512_vnni", "avx512_vnni"), ("avx_vnni", "avx_vnni"), ("avx2", "avx2")):
        if flag in flags:
            return kernel
    return "generic"


def _engine() -> None:
    engines = torch.backends.quantized.supported_engines
    torch.backends.quantized.engine = "x86" if "x86" in engines else "fbgemm" if "fbgemm" in engines else engines[-1]


def _linear_names(model: torch.nn.Module) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(part in HEAD_NAMES for part in name.split("."))
    ]


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamically quantize every linear layer except the heads; returns the quantized model (CPU, eval mode)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    _engine()
    spec = {name: per_channel_dynamic_qconfig for name in _linear_names(model)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch notes the quantized-tensor API's future move to torchao
        return quantize_dynamic(model.float().cpu().eval(), spec, dtype=torch.qint8)


def cache_dir() -> Path:
    return Path(os.environ.get("JACE_CACHE_DIR", Path.home() / ".cache" / "jace")) / "int8"


def fingerprint(*folders: str | Path) -> str:
    """A key for the model built from these folders: every file's name, size and modification time."""
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{torch.__version__}".encode())
    for folder in folders:
        folder = Path(folder).resolve()
        digest.update(str(folder).encode())
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def load_int8(key: str | None, build_fp32: Callable[[], torch.nn.Module], skeleton: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """The int8 model for ``key``: read from the cache, or built from ``build_fp32()`` and cached.

    ``skeleton()`` returns the same architecture without loading weights (the cached int8 state
    is loaded into its quantized form). ``key=None`` (e.g. a model not on local disk) skips the cache.
    """
    from jace.atomic import atomic_file

    path = None if key is None else cache_dir() / f"{key}.pt"
    if path is not None and path.is_file():
        try:
            model = quantize_int8(skeleton())
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, ValueError, EOFError) as error:
            warnings.warn(f"int8 cache {path} is unreadable ({error}); rebuilding it.", RuntimeWarning, stacklevel=2)
    model = quantize_int8(build_fp32())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "wb") as handle:
            torch.save(model.state_dict(), handle)
    return model
