"""Scoring (query, passage) and (お題, 回答) pairs with a cross-encoder reranker."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.special import expit
from transformers import AutoTokenizer, PreTrainedModel

from jace.batching import Batch, drain, iter_batched
from jace.config import DEFAULT_RERANKER
from jace.cross_encoder import ADAPTER_CONFIG, check_model_source, encode_pairs, load_sequence_regressor, loading, read_adapter_base
from jace.data import HUMOR, PairColumns
from jace.device import resolve_device, resolve_precision
from jace.scaling import TargetScaler
from jace.training import LoraTrainingConfig, TrainingResult, train_with_lora

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MODEL = DEFAULT_RERANKER

Pair = tuple[str, str]

__all__ = ["RerankerCrossEncoderClient", "DEFAULT_MODEL", "Pair", "encode_pairs", "load_sequence_regressor"]


class RerankerCrossEncoderClient:
    """A Japanese cross-encoder reranker that scores pairs in 0..1.

    ``model_name`` is a hub id, a local model folder, a merged export, or a LoRA adapter folder
    written by :meth:`train_with_lora` (its base model is loaded, then the adapter is merged in).
    ``dtype``: unset or ``"auto"`` (bf16 on GPU and on CPUs with native bf16, else fp32; see
    :func:`jace.device.resolve_dtype`), ``"float32"``, ``"bfloat16"``, ``"float16"``, or ``"int8"``
    on CPU (int8 linear layers, cached on disk; see :mod:`jace.quantization`). Training always
    starts from the fp32 weights.

    Example:
        >>> client = RerankerCrossEncoderClient()  # doctest: +SKIP
        >>> client.run([("今日の天気は？", "晴れです。"), ("今日の天気は？", "猫が好き。")])  # doctest: +SKIP
        [0.91, 0.02]
    """

    def __init__(
        self,
        model_name: str | Path = DEFAULT_MODEL,
        device: str | torch.device | None = None,
        max_length: int = 512,
        *,
        dtype: str | torch.dtype | None = None,
        max_batch_tokens: int | None = 16384,
        trust_remote_code: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype, self.quantized = resolve_precision(dtype, self.device)
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.trust_remote_code = trust_remote_code
        self.scaler: TargetScaler | None = None
        self.adapter_path: str | None = None
        check_model_source(model_name)
        adapter_base = read_adapter_base(model_name)
        self.base_model_name = str(adapter_base or model_name)
        with loading(model_name, "tokenizer"):
            self.tokenizer = AutoTokenizer.from_pretrained(str(model_name), trust_remote_code=trust_remote_code)
        if self.quantized:
            from jace.quantization import load_int8

            self.model = load_int8(self._int8_key(model_name, adapter_base), lambda: self._load_full(model_name, adapter_base), self._skeleton)
            self.adapter_path = str(model_name) if adapter_base is not None else None
        else:
            self._load_full(model_name, adapter_base)
        if Path(model_name).is_dir():
            self.scaler = TargetScaler.load(model_name)

    def _load_full(self, model_name: str | Path, adapter_base: str | None) -> PreTrainedModel:
        self.model = self._load_base()
        if adapter_base is not None:
            self.load_lora_adapter(model_name)
        return self.model

    def _skeleton(self) -> PreTrainedModel:
        """The model's architecture with fresh weights (the int8 cache's weights are loaded into it)."""
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = AutoConfig.from_pretrained(self.base_model_name, trust_remote_code=self.trust_remote_code, num_labels=1)
        return AutoModelForSequenceClassification.from_config(config, trust_remote_code=self.trust_remote_code)

    def _int8_key(self, model_name: str | Path, adapter_base: str | None) -> str | None:
        from jace.quantization import fingerprint

        folders = []
        for name in (model_name, adapter_base) if adapter_base is not None else (model_name,):
            if Path(name).is_dir():
                folders.append(name)
                continue
            try:
                from transformers.utils import cached_file

                folders.append(Path(cached_file(str(name), "config.json")).parent)  # the hub snapshot (its commit)
            except OSError:
                return None
        return fingerprint(*folders)

    def _load_base(self) -> PreTrainedModel:
        model = load_sequence_regressor(self.base_model_name, trust_remote_code=self.trust_remote_code)
        return model.to(self.device, self.dtype).eval()

    def load_lora_adapter(self, path: str | Path) -> None:
        """Apply a LoRA adapter folder (with its trained head and target scaler) and merge it for fast inference.

        Loading a second adapter starts again from the base model, so adapters never stack.
        """
        from peft import PeftModel

        path = Path(path)
        if not (path / ADAPTER_CONFIG).is_file():
            raise FileNotFoundError(f"{path}: no {ADAPTER_CONFIG}; pass the folder written by train_with_lora (…/final).")
        if self.adapter_path is not None:
            self.model = self._load_base()
        with loading(path, "LoRA adapter"):
            peft_model = PeftModel.from_pretrained(self.model.float(), str(path))
        self.model = peft_model.merge_and_unload().to(self.device, self.dtype).eval()
        self.scaler = TargetScaler.load(path)
        self.adapter_path = str(path)

    @torch.inference_mode()
    def _logits(self, features: dict[str, list[list[int]]], indices: list[int]) -> list[float]:
        batch = self.tokenizer.pad(
            {key: [values[i] for i in indices] for key, values in features.items()},
            return_tensors="pt",
            pad_to_multiple_of=8 if self.device.type == "cuda" else None,
        )
        batch = {key: tensor.to(self.device) for key, tensor in batch.items()}
        # Upcast before the sigmoid: a half-precision sigmoid saturates and ties the top scores.
        return self.model(**batch).logits.float().squeeze(-1).cpu().tolist()

    def encode(self, pairs: Sequence[Pair], *, tokenizer: Any = None, max_length: int | None = None) -> dict[str, list[list[int]]]:
        """Token ids of ``pairs`` as :meth:`run` feeds them to the model (truncated to ``max_length``, no padding).

        ``tokenizer`` is this model's tokenizer or a copy of it (another thread's own copy, so that two
        threads never share one fast tokenizer). ``max_length`` defaults to the client's.

        Example:
            >>> features = client.encode([("お題", "回答")])  # doctest: +SKIP
            >>> client.run_encoded(features)  # doctest: +SKIP
            [0.42]
        """
        return encode_pairs(tokenizer or self.tokenizer, pairs, max_length or self.max_length)

    def score_steps(
        self,
        features: dict[str, list[list[int]]],
        batch_size: int = 32,
        *,
        original_scale: bool = False,
        raw_scores: bool = False,
        show_progress_bar: bool | None = None,
    ) -> Generator[Batch, None, list[float]]:
        """:meth:`run` on pairs already :meth:`encode`-d, one batch per step (see :func:`jace.batching.iter_batched`).

        Example:
            >>> drain(client.score_steps(client.encode([("お題", "回答")])))  # doctest: +SKIP
            [0.42]
        """
        if original_scale and raw_scores:
            raise ValueError("original_scale and raw_scores exclude each other: the scale maps sigmoid scores back.")
        if original_scale and self.scaler is None:
            raise ValueError(
                "original_scale=True needs a target scaler, but this model has none (target_scaler.json); "
                "it is saved by train_with_lora. Scores are on 0..1."
            )
        lengths = [len(ids) for ids in features["input_ids"]]
        logits = yield from iter_batched(
            lengths,
            lambda indices: self._logits(features, indices),
            batch_size=batch_size,
            max_tokens=self.max_batch_tokens,
            device=self.device,
            desc="Scoring",
            show_progress_bar=show_progress_bar,
        )
        if raw_scores:
            return [float(logit) for logit in logits]
        scores = expit(np.asarray(logits, dtype=np.float64))
        if original_scale:
            scores = self.scaler.inverse_transform(scores)  # type: ignore[union-attr]
        return [float(s) for s in scores]

    def run_encoded(self, features: dict[str, list[list[int]]], batch_size: int = 32, **options: Any) -> list[float]:
        """:meth:`run` on pairs already :meth:`encode`-d (the options are :meth:`run`'s)."""
        return drain(self.score_steps(features, batch_size, **options))

    def run(
        self,
        pairs: Sequence[Pair],
        batch_size: int = 32,
        *,
        original_scale: bool = False,
        raw_scores: bool = False,
        show_progress_bar: bool | None = None,
    ) -> list[float]:
        """Score pairs: sigmoid of the model's logit (0..1), in input order.

        Pairs are sorted by token length and batched under a token budget with dynamic padding.
        With ``original_scale=True`` the scores are mapped back to the training data's scale
        (needs a model trained by jace, which saves its target scaler). ``raw_scores=True``
        returns the logits themselves.

        Example:
            >>> client.run([("お題", "回答")], original_scale=True)  # doctest: +SKIP
            [2.71]
        """
        return self.run_encoded(self.encode(pairs), batch_size, original_scale=original_scale, raw_scores=raw_scores,
                                show_progress_bar=show_progress_bar)  # fmt: skip

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        *,
        return_documents: bool = False,
        batch_size: int = 32,
    ) -> list[dict[str, Any]]:
        """Rank documents for a query, best first: ``[{"corpus_id", "score"[, "text"]}]`` like CrossEncoder.rank.

        Example:
            >>> client.rank("猫の好物は？", ["魚です。", "車です。"], top_k=1)  # doctest: +SKIP
            [{'corpus_id': 0, 'score': 0.97}]
        """
        scores = self.run([(query, doc) for doc in documents], batch_size=batch_size)
        order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[:top_k]
        ranked = []
        for i in order:
            entry: dict[str, Any] = {"corpus_id": i, "score": scores[i]}
            if return_documents:
                entry["text"] = documents[i]
            ranked.append(entry)
        return ranked

    def train_with_lora(
        self,
        train_dataset: "pd.DataFrame | Any | str | Path",
        eval_dataset: "pd.DataFrame | Any | str | Path | None" = None,
        output_dir: str | Path = "runs/reranker-lora",
        *,
        config: LoraTrainingConfig | None = None,
        columns: PairColumns = HUMOR,
        callbacks: list[Any] | None = None,
    ) -> TrainingResult:
        """LoRA-fine-tune this reranker into a regression model; see :func:`jace.training.train_with_lora`.

        On success the client scores with the trained model (and its target scaler); if training
        fails, the client is left exactly as it was.

        Example:
            >>> result = client.train_with_lora("train.csv", "valid.csv", "runs/humor")  # doctest: +SKIP
            >>> client.run([("お題", "回答")], original_scale=True)  # doctest: +SKIP
        """
        if self.quantized:
            raise ValueError("an int8 client cannot be trained; load the model with dtype='float32' (the CPU default) to train it.")
        if self.adapter_path is not None:
            raise ValueError(
                f"this client already holds an adapter ({self.adapter_path}); a new adapter must start from the "
                "base model. Create a new RerankerCrossEncoderClient(base), or export the merged model "
                "(jace export) and train on that folder."
            )
        # Train from the exact weights, not their bf16/fp16 rounding.
        model = self.model if self.dtype == torch.float32 else load_sequence_regressor(
            self.base_model_name, trust_remote_code=self.trust_remote_code).to(self.device)  # fmt: skip
        result = train_with_lora(
            model, self.tokenizer, train_dataset, eval_dataset, output_dir, config=config, columns=columns,
            callbacks=callbacks, base_model_name=self.base_model_name,
        )  # fmt: skip
        self.model = result.model.to(self.device, self.dtype).eval()
        self.scaler = result.scaler
        self.adapter_path = str(result.final_dir)
        return result
