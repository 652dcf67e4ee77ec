"""The cross-encoder itself: tokenizing (query, passage) pairs and loading a single-logit model.

Scoring, training and pruning all build on these, so none of them has to import another.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from jace.atomic import check_complete

ADAPTER_CONFIG = "adapter_config.json"
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def check_model_source(name_or_path: str | Path) -> None:
    """Fail early and clearly on a model argument that can be neither a local folder nor a hub id.

    Example:
        >>> check_model_source("hotchpotch/japanese-reranker-cross-encoder-large-v1")
    """
    path = Path(name_or_path)
    if path.is_dir():
        check_complete(path)
        if not (path / "config.json").is_file() and any(path.glob("adapter_model.*")) and not (path / ADAPTER_CONFIG).is_file():
            raise FileNotFoundError(
                f"{path}: holds LoRA adapter weights but no {ADAPTER_CONFIG}; copy it back from the training run "
                "(…/final) or re-run training."
            )
    elif path.exists():
        raise NotADirectoryError(f"{path} is a file; pass a model folder or a hub id (org/name).")
    elif not _HUB_ID.match(str(name_or_path)):
        raise FileNotFoundError(f"{name_or_path}: no such model folder, and not a hub id (org/name).")


@contextmanager
def loading(name_or_path: str | Path, what: str = "model") -> Iterator[None]:
    """Turn a failed ``from_pretrained`` into an OSError that names the model and says what to do."""
    try:
        yield
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        if isinstance(error, (FileNotFoundError, NotADirectoryError)) or str(name_or_path) in str(error):
            raise
        hint = (
            "its files are incomplete or corrupt; save or download it again"
            if "deserializ" in str(error) or "header" in str(error).lower()
            else "check the name or folder (offline, only local folders and cached hub models load)"
        )
        raise OSError(f"{name_or_path}: cannot load the {what}: {error} ({hint}).") from error


def encode_pairs(tokenizer: Any, pairs: Sequence[Sequence[str]], max_length: int) -> dict[str, list[list[int]]]:
    """Tokenize pairs without padding (dynamic padding happens per batch), truncating to ``max_length``.

    Raises a ValueError naming the first pair that is not two non-empty strings.

    Example:
        >>> encode_pairs(tokenizer, [("お題", "回答")], 512)["input_ids"]  # doctest: +SKIP
        [[2, 1234, 3, 5678, 3]]
    """
    firsts, seconds = [], []
    for index, pair in enumerate(pairs):
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2 or not all(isinstance(text, str) for text in pair):
            raise ValueError(f"pair {index} must be two strings (query, passage), got {pair!r}.")
        if not pair[0].strip() or not pair[1].strip():
            raise ValueError(f"pair {index} has an empty text: {pair!r}. Drop or fill in such pairs.")
        firsts.append(pair[0])
        seconds.append(pair[1])
    if not firsts:
        return {"input_ids": []}
    encoded = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    return {key: list(value) for key, value in encoded.items()}


def portable_base_name(name_or_path: str) -> str:
    """What an adapter should record as its base: a local folder as an absolute path (so the adapter
    loads from any working directory), anything else (a hub id, or "" for an unnamed model) unchanged.

    Example:
        >>> portable_base_name("hotchpotch/japanese-reranker-cross-encoder-large-v1")
        'hotchpotch/japanese-reranker-cross-encoder-large-v1'
    """
    # Path("") is the working directory: an unnamed model must not record it as its base.
    return str(Path(name_or_path).resolve()) if name_or_path and Path(name_or_path).is_dir() else name_or_path


def read_adapter_base(path: str | Path) -> str | None:
    """The base model a LoRA adapter folder was trained on, or None if ``path`` is not an adapter folder."""
    config = Path(path) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text())["base_model_name_or_path"]
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"{config}: not a readable PEFT adapter config ({error}); re-save the adapter or delete the folder."
        ) from None


def load_sequence_regressor(
    name_or_path: str | Path, *, trust_remote_code: bool = False, **kwargs: Any
) -> PreTrainedModel:
    """Load a single-logit sequence classifier; a bare encoder (e.g. MiniLM) gets a new 1-logit head.

    Example:
        >>> model = load_sequence_regressor("hotchpotch/japanese-reranker-cross-encoder-large-v1")  # doctest: +SKIP
        >>> model.config.num_labels  # doctest: +SKIP
        1
    """
    check_model_source(name_or_path)
    with loading(name_or_path, "model config"):
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if config.num_labels != 1:
        architectures = config.architectures or []
        if any("ForSequenceClassification" in arch for arch in architectures):
            raise ValueError(
                f"{name_or_path} is a classifier with {config.num_labels} labels; jace needs a single-logit "
                "cross-encoder (a reranker), or a bare encoder to put a new regression head on."
            )
        config.num_labels = 1
    with loading(name_or_path):
        model, info = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, config=config, trust_remote_code=trust_remote_code, output_loading_info=True, **kwargs
        )
    init_missing_pooler(model, info.get("missing_keys", ()))
    return model


def init_missing_pooler(model: PreTrainedModel, missing_keys: Iterable[str]) -> bool:
    """Start a pooler that the checkpoint lacks as the identity map (weight I, bias 0); return whether it did.

    BERT's sequence classifier reads ``[CLS]`` through ``pooler.dense`` + tanh. A backbone trained
    with mean pooling (e5, most sentence embedders) ships no trained pooler, and a random one
    scrambles the ``[CLS]`` state the head sees. Identity keeps it (tanh only squashes); training
    then adapts the pooler (jace trains it with the head). Measured in docs/benchmarks.md.

    Example:
        >>> model = load_sequence_regressor("runs/e5")  # doctest: +SKIP
        >>> # the converted e5 ships no pooler, so jace starts it as the identity
        >>> bool((model.bert.pooler.dense.weight == torch.eye(384)).all())  # doctest: +SKIP
        True
    """
    import torch

    if not any(".pooler." in f".{key}" for key in missing_keys):
        return False
    for name, module in model.named_modules():
        dense = getattr(module, "dense", None)
        if name.split(".")[-1] == "pooler" and isinstance(dense, torch.nn.Linear) and dense.in_features == dense.out_features:
            with torch.no_grad():
                dense.weight.copy_(torch.eye(dense.in_features, dtype=dense.weight.dtype))
                dense.bias.zero_()
            return True
    return False
