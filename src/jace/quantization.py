"""int8 CPU inference: int8 linear layers with per-token activation scales, cached on disk.

Every ``nn.Linear`` of the encoder becomes an :class:`Int8Linear`: int8 weights (one scale per
output channel) times int8 activations (one scale per token). The heads stay in fp32, so scores
keep their scale. The integer product runs on the kernel this CPU has (:func:`int8_gemm`):

* AVX512-VNNI or AMX: ``torch._int_mm`` (oneDNN, signed 8-bit activations).
* AVX2, with or without AVX-VNNI: ``torch._int_mm`` has no fast kernel on AVX2 without VNNI
  (measured 1 GOP/s; a whole e5 model ran 55× slower than in fp32) and is unmeasured on AVX-VNNI,
  so jace runs the same integer product through FBGEMM's AVX2 kernel
  (``quantized::linear_dynamic``) instead, with 7-bit activations so that its 16-bit
  multiply-adds cannot saturate. The product is exact: each token's integers pass through
  FBGEMM's own quantization unchanged (scale 1, zero point 64, pinned by two guard rows).

Why not ``torch.ao.quantization.quantize_dynamic``: it gives a whole batch *one* activation scale,
and transformer activations carry a few channels far larger than the rest, so most channels are
left with a handful of int8 levels. On a trained multilingual-e5 humor model its scores correlated
0.966 with fp32 (``docs/benchmarks.md``). Per-token scales, with the few largest input channels of
each call computed in fp32 beside the int8 product (the LLM.int8() decomposition), reach 0.999.

The quantized weights are cached under ``$JACE_CACHE_DIR`` (default ``~/.cache/jace``), keyed by
the model's files, so a second load reads them and never quantizes again.

Example:
    >>> layer = Int8Linear.from_linear(torch.nn.Linear(64, 32))
    >>> layer(torch.randn(3, 5, 64)).shape
    torch.Size([3, 5, 32])
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from jace.device import cpu_flags

#: Layers kept in fp32: the heads, and BERT's pooler. The pooler reads one token per pair (no
#: compute to save), and a pooler started as the identity (jace's default for backbones without
#: one) ends training as the identity plus small updates that one int8 scale per row erases: on
#: an e5 humor model, quantizing it dropped the int8/fp32 Spearman from 0.9995 to 0.978 (500 humor pairs).
HEAD_NAMES = ("classifier", "score", "out_proj", "ranking_head", "pruning_head", "pooler")
#: Input channels per call computed in fp32: enough for multilingual-e5's outlier dimensions
#: (measured: 0 → Spearman 0.9948 with fp32, 4 → 0.9994, 16 → 0.9994, 32 → 0.9995 on 500 humor pairs).
DEFAULT_OUTLIERS = 8
#: The same on the FBGEMM path, whose activations have 7 bits: 8 → 0.99877, 16 → 0.99902, 32 → 0.99906 (500 humor pairs).
FBGEMM_OUTLIERS = 16
_CACHE_FORMAT = "3"  # 3: the pooler stays fp32
GEMMS = ("int_mm", "fbgemm")


def int8_gemm(kernel: str | None = None) -> str:
    """The integer GEMM :class:`Int8Linear` uses for a CPU kernel family (default: this CPU's).

    ``"int_mm"`` (``torch._int_mm``, oneDNN) where it was measured fast: AVX512-VNNI and AMX.
    ``"fbgemm"`` on AVX2, with or without AVX-VNNI: ``torch._int_mm`` ran ~1 GOP/s on AVX2 without
    VNNI, and on AVX-VNNI (256-bit) it is unmeasured, while FBGEMM's AVX2 kernel is measured on both
    paths of this choice. A CPU without AVX2 has no fast int8 kernel: it gets ``"int_mm"`` and a
    warning. ``$JACE_INT8_GEMM`` (``int_mm`` or ``fbgemm``) overrides the choice.

    Example:
        >>> int8_gemm("avx512_vnni"), int8_gemm("avx_vnni"), int8_gemm("avx2")
        ('int_mm', 'fbgemm', 'fbgemm')
    """
    chosen = os.environ.get("JACE_INT8_GEMM") if kernel is None else None
    if chosen:
        if chosen not in GEMMS:
            raise ValueError(f"JACE_INT8_GEMM must be one of {GEMMS}, got {chosen!r}.")
        return chosen
    if kernel is None:
        kernel = int8_kernel()
        if kernel == "generic":
            _warn_no_fast_int8()
    if kernel in ("avx2", "avx_vnni") and "fbgemm" in torch.backends.quantized.supported_engines:
        return "fbgemm"
    return "int_mm"


@functools.lru_cache(maxsize=1)
def _warn_no_fast_int8() -> None:
    warnings.warn(
        "dtype int8 on a CPU without AVX2, AVX-VNNI, AVX512-VNNI or AMX: PyTorch has no fast int8 kernel here, "
        "so int8 is likely much slower than float32; use dtype='float32'.",
        RuntimeWarning,
        stacklevel=4,
    )


def int8_kernel() -> str:
    """The int8 GEMM kernel family this CPU offers: ``amx``, ``avx512_vnni``, ``avx_vnni``, ``avx2`` or ``generic``.

    Example:
        >>> int8_kernel() in {"amx", "avx512_vnni", "avx_vnni", "avx2", "generic"}
        True
    """
    flags = cpu_flags()
    for kernel, flag in (("amx", "amx_int8"), ("avx512_vnni", "avx512_vnni"), ("avx_vnni", "avx_vnni"), ("avx2", "avx2")):
        if flag in flags:
            return kernel
    return "generic"


class Int8Linear(torch.nn.Module):
    """``y = x·Wᵀ + b`` in int8: weights per output channel, activations per token (row).

    The ``outliers`` input channels with the largest magnitude in a call are taken out of the int8
    product and multiplied in fp32 instead, so one large channel cannot flatten a token's scale.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, outliers: int | None = None,
                 gemm: str | None = None) -> None:  # fmt: skip
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.gemm = int8_gemm() if gemm is None else gemm
        if self.gemm not in GEMMS:
            raise ValueError(f"gemm must be one of {GEMMS}, got {self.gemm!r}.")
        if outliers is None:
            outliers = FBGEMM_OUTLIERS if self.gemm == "fbgemm" else DEFAULT_OUTLIERS
        self.outliers = min(outliers, in_features)
        # Largest activation integer: FBGEMM's AVX2 kernel needs 7 bits to stay exact (see the module docstring).
        self.levels = 63 if self.gemm == "fbgemm" else 127
        self._packed: tuple[int, object] | None = None  # (weight_t's version, FBGEMM's packed weight)
        self.register_buffer("weight_t", torch.zeros(in_features, out_features, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, outliers: int | None = None, gemm: str | None = None) -> "Int8Linear":
        """Quantize a float linear layer (symmetric, one scale per output channel)."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, outliers, gemm)
        weight = linear.weight.detach().float().cpu()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        layer.weight_t.copy_(torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8).t())
        layer.weight_scale.copy_(scale)
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float().cpu())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        x = x.reshape(-1, self.in_features).float()
        if x.shape[0] == 0:
            return x.new_zeros(*leading, self.out_features)
        channels = None
        if self.outliers:
            channels = torch.maximum(x.amax(dim=0), x.amin(dim=0).neg_()).topk(self.outliers).indices
            kept = x[:, channels]
            x.index_fill_(1, channels, 0.0)  # x may be the caller's tensor: restored below
        scale = torch.maximum(x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True).neg_()).clamp_(min=1e-12).div_(self.levels)
        if self.gemm == "fbgemm":
            y = self._fbgemm_product(x, scale)
        else:
            y = torch._int_mm(x.div(scale).round_().to(torch.int8), self.weight_t).float()
        y.mul_(scale)
        if channels is not None:
            x.index_copy_(1, channels, kept)
            y.addmm_(kept, self.weight_t[channels].float())  # the outlier channels' product, in fp32
        if self.bias is not None:
            torch.addcmul(self.bias, y, self.weight_scale, out=y)
        else:
            y.mul_(self.weight_scale)
        return y.reshape(*leading, self.out_features)

    def _fbgemm_product(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``round(x / scale) @ weight_t`` (int32-exact, as fp32) through FBGEMM's dynamic linear."""
        rows = x.shape[0]
        integers = x.new_empty(rows + 2, self.in_features)
        torch.div(x, scale, out=integers[:rows]).round_()
        integers[rows:].zero_()
        # Guard rows pin FBGEMM's per-tensor range to [-64, 63]: scale 1, zero point 64, so it quantizes our integers unchanged.
        integers[rows, 0], integers[rows + 1, 0] = -(self.levels + 1), self.levels
        return torch.ops.quantized.linear_dynamic(integers, self._packed_weight(), True)[:rows]

    def _packed_weight(self) -> object:
        version = self.weight_t._version
        if self._packed is None or self._packed[0] != version:  # (re)pack after loading new weights
            channels = self.out_features
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # quantized tensor creation is deprecated, not gone (torch 2.13)
                weight = torch._make_per_channel_quantized_tensor(
                    self.weight_t.t().contiguous(), torch.ones(channels, dtype=torch.double), torch.zeros(channels, dtype=torch.long), 0
                )
                engine = torch.backends.quantized.engine
                try:
                    torch.backends.quantized.engine = "fbgemm"
                    packed = torch.ops.quantized.linear_prepack(weight, None)
                finally:
                    torch.backends.quantized.engine = engine
            self._packed = (version, packed)
        return self._packed[1]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, outliers={self.outliers}, gemm={self.gemm}"


def _encoder_linears(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    """(parent, attribute, layer) for every nn.Linear outside the heads."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not any(part in HEAD_NAMES for part in name.split(".")):
            parent_name, _, attribute = name.rpartition(".")
            found.append((model.get_submodule(parent_name), attribute, module))
    return found


def quantize_int8(model: torch.nn.Module, outliers: int | None = None) -> torch.nn.Module:
    """Replace every encoder linear layer (not the heads) by an :class:`Int8Linear`; returns the model (CPU, fp32, eval).

    Example:
        >>> model = quantize_int8(torch.nn.Sequential(torch.nn.Linear(8, 8)))
        >>> type(model[0]).__name__
        'Int8Linear'
    """
    model = model.float().cpu().eval()
    for parent, attribute, linear in _encoder_linears(model):
        setattr(parent, attribute, Int8Linear.from_linear(linear, outliers))
    return model


def cache_dir() -> Path:
    return Path(os.environ.get("JACE_CACHE_DIR", Path.home() / ".cache" / "jace")) / "int8"


def fingerprint(*folders: str | Path) -> str:
    """A key for the model built from these folders: every file's name, size and modification time."""
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{torch.__version__}|{DEFAULT_OUTLIERS}".encode())
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
