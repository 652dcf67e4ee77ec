"""The jace-side PruningEncoder: build, save, load, prune, rerank, upload."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from transformers import AutoConfig, AutoModel, AutoTokenizer

from jace.atomic import atomic_directory
from jace.batching import Batch, drain, iter_batched
from jace.cross_encoder import check_model_source, load_sequence_regressor, loading
from jace.device import resolve_device, resolve_precision
from jace.pruning import modeling_pruning_encoder as modeling
from jace.pruning.card import write_model_card
from jace.pruning.inputs import PairTemplate, collate, encode_windows
from jace.pruning.modeling_pruning_encoder import (
    MODES,
    PruningEncoderConfig,
    PruningEncoderForSequenceClassification,
    PruningEncoderForTokenClassification,
)
from jace.pruning.selection import keep_masks
from jace.pruning.sentences import compression_rate, join_kept, split_sentences

MODELING_FILE = Path(modeling.__file__).name
MODEL_CLASSES = {
    "reranking_pruning": PruningEncoderForSequenceClassification,
    "pruning_only": PruningEncoderForTokenClassification,
}
AUTO_CLASS = {
    "reranking_pruning": "AutoModelForSequenceClassification",
    "pruning_only": "AutoModelForTokenClassification",
}


@dataclass
class PruningResult:
    """The outcome for one (query, context): what was kept, with what probability, and the rerank score."""

    query: str
    context: str
    pruned_context: str
    kept_sentences: list[str]
    removed_sentences: list[str]
    kept_indices: list[int]
    sentence_probabilities: list[float]
    sentence_spans: list[tuple[int, int]]
    reranking_score: float | None
    compression_rate: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Item:
    query: str
    context: str
    spans: list[tuple[int, int]]
    sums: np.ndarray = field(default=None)  # type: ignore[assignment]
    counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    best_logit: float = -np.inf


@dataclass
class PruningPlan:
    """Contexts split into sentences and tokenized into model windows (:meth:`PruningEncoder.plan_pruning`)."""

    queries: int
    flat: list[tuple[int, _Item]]  # (query index, context) for every context
    windows: list[tuple[int, Any]]  # (index into flat, encoded window)

    @property
    def tokens(self) -> int:
        """Tokens the model will see (every window, unpadded)."""
        return sum(len(window.input_ids) for _, window in self.windows)

    @classmethod
    def join(cls, plans: Sequence["PruningPlan"]) -> "PruningPlan":
        """One plan holding several, queries in order (their results come back in the same order)."""
        if len(plans) == 1:
            return plans[0]
        queries, flat, windows = 0, [], []
        for plan in plans:
            windows += [(len(flat) + item_index, window) for item_index, window in plan.windows]
            flat += [(queries + q_index, item) for q_index, item in plan.flat]
            queries += plan.queries
        return cls(queries, flat, windows)


def _check_text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}.")
    return value


def _checked_spans(spans: Sequence[Sequence[int]], context: str, what: str) -> list[tuple[int, int]]:
    checked, previous_end = [], 0
    for start, end in spans:
        if not previous_end <= start < end <= len(context):
            raise ValueError(f"{what}: sentence span [{start}, {end}] is out of order or outside the text (length {len(context)}).")
        checked.append((int(start), int(end)))
        previous_end = end
    if not checked:
        raise ValueError(f"{what}: no sentence spans.")
    return checked


class PruningEncoder:
    """A cross-encoder that reranks a passage and keeps only the sentences that matter to the query.

    ``dtype`` works as in :class:`~jace.scoring.RerankerCrossEncoderClient`: unset or ``"auto"``
    (bf16 on GPU and on CPUs with native bf16, else fp32), a float dtype, or ``"int8"`` on CPU
    (cached by :meth:`from_pretrained`).

    Example:
        >>> encoder = PruningEncoder.from_backbone("hotchpotch/japanese-reranker-cross-encoder-large-v1")  # doctest: +SKIP
        >>> result = encoder.prune("日本で梅雨がないのは？", ["梅雨は雨季です。北海道には梅雨がない。"])[0]  # doctest: +SKIP
        >>> result.pruned_context, result.reranking_score  # doctest: +SKIP
    """

    def __init__(
        self,
        model: modeling.PruningEncoderPreTrainedModel,
        tokenizer: Any,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        max_length: int = 512,
        max_query_tokens: int = 64,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype, self.quantized = resolve_precision(dtype, self.device)
        if self.quantized:
            from jace.quantization import quantize_int8

            model = quantize_int8(model)  # a model already quantized (from the cache) is left as it is
        self.model = model.to(self.device, self.dtype).eval()
        self.tokenizer = tokenizer
        self.max_length = min(max_length, getattr(model.config.backbone(), "max_position_embeddings", max_length))
        self.max_query_tokens = max_query_tokens
        self.template = PairTemplate.probe(tokenizer)
        self.metadata = dict(metadata or {})

    @property
    def mode(self) -> str:
        return self.model.config.mode

    @property
    def default_threshold(self) -> float:
        """The keep threshold :meth:`prune` uses when none is given (saved in ``config.json``)."""
        return float(getattr(self.model.config, "default_threshold", 0.1))

    @property
    def keep_top_context(self) -> bool:
        """Whether :meth:`prune` keeps the best sentence of a query's top-ranked context by default (saved in ``config.json``)."""
        return bool(getattr(self.model.config, "keep_top_context", False))

    @classmethod
    def from_backbone(
        cls, backbone: str | Path, mode: str = "reranking_pruning", *, device: str | None = None, **kwargs: Any
    ) -> "PruningEncoder":
        """A new PruningEncoder on a pretrained backbone (reranker or encoder) with a fresh pruning head (fp32 unless ``dtype`` is given: it is for training)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        backbone = str(backbone)
        if mode == "reranking_pruning":
            pretrained = load_sequence_regressor(backbone)  # checks the source and names it in errors itself
        else:
            check_model_source(backbone)
            with loading(backbone, "backbone"):
                pretrained = AutoModel.from_pretrained(backbone)
        config = PruningEncoderConfig(mode=mode, backbone_config=pretrained.config.to_dict())
        model = MODEL_CLASSES[mode](config)
        model.backbone_model.load_state_dict(pretrained.state_dict())
        tokenizer = AutoTokenizer.from_pretrained(backbone)
        kwargs.setdefault("dtype", "float32")
        return cls(model, tokenizer, device=device, metadata={"backbone": backbone}, **kwargs)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, device: str | None = None, dtype: str | torch.dtype | None = None, **kwargs: Any
    ) -> "PruningEncoder":
        """Load a folder written by :meth:`save_pretrained` (or a hub repo holding one).

        With ``dtype="int8"`` the quantized weights of a local folder are cached (see
        :mod:`jace.quantization`), so the next load skips quantization.
        """
        folder = Path(path)
        check_model_source(path)
        if folder.is_dir():
            missing = [name for name in ("config.json", "pruning_encoder_config.json") if not (folder / name).is_file()]
            if missing:
                raise FileNotFoundError(f"{folder} is not a PruningEncoder folder: missing {missing}.")
        with loading(path, "PruningEncoder config"):
            config = AutoConfig.from_pretrained(str(path))
        if not isinstance(config, PruningEncoderConfig):
            raise ValueError(f"{path} holds a {type(config).__name__}, not a PruningEncoder (model_type 'pruning_encoder').")
        model_class = MODEL_CLASSES[config.mode]
        with loading(path, "PruningEncoder"):
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            if resolve_precision(dtype, resolve_device(device))[1] and folder.is_dir():
                from jace.quantization import fingerprint, load_int8

                model = load_int8(fingerprint(folder), lambda: model_class.from_pretrained(str(path), config=config), lambda: model_class(config))
            else:
                model = model_class.from_pretrained(str(path), config=config)
        metadata = {}
        if folder.is_dir() and (folder / "pruning_encoder_config.json").is_file():
            metadata = json.loads((folder / "pruning_encoder_config.json").read_text()).get("metadata", {})
        return cls(model, tokenizer, device=device, dtype=dtype, metadata=metadata, **kwargs)

    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the folder atomically: config (with auto_map), modeling file, weights, tokenizer, model card.

        An existing folder keeps its other files; one holding a different model is refused unless
        ``overwrite=True``.
        """
        if self.quantized:
            raise ValueError("an int8 PruningEncoder cannot be saved (its int8 weights are a cache); load the folder without dtype='int8' to save it.")
        config = self.model.config
        config.auto_map = {
            "AutoConfig": f"{Path(MODELING_FILE).stem}.PruningEncoderConfig",
            "AutoModel": f"{Path(MODELING_FILE).stem}.PruningEncoderModel",
            AUTO_CLASS[self.mode]: f"{Path(MODELING_FILE).stem}.{MODEL_CLASSES[self.mode].__name__}",
        }
        config.architectures = [MODEL_CLASSES[self.mode].__name__]
        if self.mode == "reranking_pruning":
            config.sentence_transformers = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
        with atomic_directory(path, overwrite=overwrite) as tmp:
            self.model.save_pretrained(tmp)
            shutil.copyfile(modeling.__file__, tmp / MODELING_FILE)
            self.tokenizer.save_pretrained(tmp)
            extra = json.loads((tmp / "pruning_encoder_config.json").read_text())
            extra["metadata"] = self.metadata
            (tmp / "pruning_encoder_config.json").write_text(json.dumps(extra, indent=2, ensure_ascii=False) + "\n")
            write_model_card(tmp, self.mode, config.backbone_config.get("model_type", "?"), self.metadata, self.default_threshold,
                             self.keep_top_context)  # fmt: skip
        return Path(path)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload PruningEncoder") -> str:  # fmt: skip
        """Save to a temporary folder and upload it with huggingface_hub; returns the commit URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "model")
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
        return str(getattr(commit, "commit_url", commit))

    # ---- inference -------------------------------------------------------------------------

    @torch.inference_mode()
    def _forward(self, windows: list, indices: list[int]) -> list[tuple[float, np.ndarray, np.ndarray]]:
        batch = collate([windows[i][1] for i in indices], self.tokenizer.pad_token_id or 0)
        sentence_ids = batch.pop("sentence_ids")
        output = self.model(**{key: tensor.to(self.device) for key, tensor in batch.items()})
        keep = torch.softmax(output.pruning_logits.float(), dim=-1)[..., 1].cpu()
        ranking = output.ranking_logits.float().squeeze(-1).cpu() if output.ranking_logits is not None else None
        results = []
        for row, i in enumerate(indices):
            ids = sentence_ids[row]
            mask = ids >= 0
            n = int(ids.max()) + 1 if mask.any() else 0
            sums = np.bincount(ids[mask].numpy(), weights=keep[row][mask].numpy(), minlength=n)
            counts = np.bincount(ids[mask].numpy(), minlength=n)
            results.append((float(ranking[row]) if ranking is not None else float("nan"), sums, counts))
        return results

    def prune_batch(
        self,
        items: Sequence[tuple[str, str | Sequence[str]]],
        *,
        threshold: float | None = None,
        batch_size: int = 16,
        show_progress_bar: bool | None = None,
        sentence_spans: Sequence[Sequence[Sequence[tuple[int, int]]]] | None = None,
        keep_top_context: bool | None = None,
    ) -> list[list[PruningResult]]:
        """Prune many ``(query, contexts)`` at once; one list of results per query, contexts in order.

        ``sentence_spans`` (one list of ``(start, end)`` spans per context, per query) replaces
        jace's own sentence splitting, e.g. to score against a dataset's labelled sentences.
        ``threshold`` defaults to the model's saved ``default_threshold`` (0.1 unless evaluation set it).
        ``keep_top_context`` (default: the model's saved setting, off unless evaluation set it) keeps
        the best sentence of each query's top-ranked context even when none passes the threshold
        (:func:`~jace.pruning.selection.keep_masks`).
        """
        plan = self.plan_pruning(items, sentence_spans=sentence_spans)
        return drain(self.prune_steps(plan, threshold=threshold, batch_size=batch_size, show_progress_bar=show_progress_bar,
                                      keep_top_context=keep_top_context))  # fmt: skip

    def plan_pruning(
        self,
        items: Sequence[tuple[str, str | Sequence[str]]],
        *,
        sentence_spans: Sequence[Sequence[Sequence[tuple[int, int]]]] | None = None,
        tokenizer: Any = None,
    ) -> PruningPlan:
        """The first half of :meth:`prune_batch`: check the texts, split sentences and tokenize the windows.

        ``tokenizer`` is this model's tokenizer or a copy of it (another thread's own copy). The plan
        goes to :meth:`prune_steps`, which runs the model; ``plan.tokens`` counts its tokens.

        Example:
            >>> plan = encoder.plan_pruning([("梅雨は？", ["梅雨は雨季。猫が好き。"])])  # doctest: +SKIP
            >>> drain(encoder.prune_steps(plan))[0][0].pruned_context  # doctest: +SKIP
            '梅雨は雨季。'
        """
        if sentence_spans is not None and len(sentence_spans) != len(items):
            raise ValueError(f"sentence_spans has {len(sentence_spans)} entries for {len(items)} queries.")
        flat: list[tuple[int, _Item]] = []
        for q_index, (query, contexts) in enumerate(items):
            _check_text(query, f"query {q_index}")
            contexts = [contexts] if isinstance(contexts, str) else list(contexts)
            if not contexts:
                raise ValueError(f"query {q_index} has no contexts.")
            given = None if sentence_spans is None else list(sentence_spans[q_index])
            if given is not None and len(given) != len(contexts):
                raise ValueError(f"sentence_spans[{q_index}] has {len(given)} entries for {len(contexts)} contexts.")
            for c_index, context in enumerate(contexts):
                where = f"context {c_index} of query {q_index}"
                _check_text(context, where)
                spans = split_sentences(context) if given is None else _checked_spans(given[c_index], context, where)
                flat.append((q_index, _Item(query, context, spans)))
        windows = []
        for item_index, (_, item) in enumerate(flat):
            for window in encode_windows(tokenizer or self.tokenizer, self.template, item.query, item.context, item.spans,
                                         self.max_length, self.max_query_tokens):  # fmt: skip
                windows.append((item_index, window))
        return PruningPlan(len(items), flat, windows)

    def prune_steps(
        self,
        plan: PruningPlan,
        *,
        threshold: float | None = None,
        batch_size: int = 16,
        show_progress_bar: bool | None = None,
        keep_top_context: bool | None = None,
    ) -> Generator[Batch, None, list[list[PruningResult]]]:
        """The second half of :meth:`prune_batch`: the model's passes over a plan, one batch per step
        (see :func:`jace.batching.iter_batched`); returns :meth:`prune_batch`'s results."""
        threshold = self.default_threshold if threshold is None else threshold
        keep_top_context = self.keep_top_context if keep_top_context is None else keep_top_context
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}.")
        windows = plan.windows
        outputs = yield from iter_batched(
            [len(w.input_ids) for _, w in windows], lambda idx: self._forward(windows, idx),
            batch_size=batch_size, device=self.device, desc="Pruning", show_progress_bar=show_progress_bar,
        )  # fmt: skip
        items = [_Item(item.query, item.context, item.spans, np.zeros(len(item.spans)), np.zeros(len(item.spans)))
                 for _, item in plan.flat]  # fmt: skip
        for (item_index, _), (logit, sums, counts) in zip(windows, outputs):
            item = items[item_index]
            item.sums[: len(sums)] += sums
            item.counts[: len(counts)] += counts
            item.best_logit = max(item.best_logit, logit) if not np.isnan(logit) else item.best_logit
        per_query: list[list[_Item]] = [[] for _ in range(plan.queries)]
        for (q_index, _), item in zip(plan.flat, items):
            per_query[q_index].append(item)
        results: list[list[PruningResult]] = []
        for contexts in per_query:
            probabilities = [np.divide(item.sums, np.maximum(item.counts, 1)).tolist() for item in contexts]
            scores = [None if not np.isfinite(item.best_logit) else float(expit(item.best_logit)) for item in contexts]
            masks = keep_masks(probabilities, threshold, scores=scores, keep_top_context=keep_top_context)
            results.append([self._result(*args) for args in zip(contexts, probabilities, scores, masks)])
        return results

    def _result(self, item: _Item, probabilities: list[float], score: float | None, keep: list[bool]) -> PruningResult:
        texts = [item.context[s:e] for s, e in item.spans]
        return PruningResult(
            query=item.query, context=item.context, pruned_context=join_kept(item.context, item.spans, keep),
            kept_sentences=[t for t, k in zip(texts, keep) if k],
            removed_sentences=[t for t, k in zip(texts, keep) if not k], kept_indices=[i for i, k in enumerate(keep) if k],
            sentence_probabilities=probabilities, sentence_spans=list(item.spans),
            reranking_score=score, compression_rate=compression_rate(item.spans, keep),
        )  # fmt: skip

    def prune(
        self, query: str, contexts: str | Sequence[str], threshold: float | None = None, batch_size: int = 16,
        *, show_progress_bar: bool | None = None, keep_top_context: bool | None = None,
    ) -> PruningResult | list[PruningResult]:  # fmt: skip
        """Prune one context (``str`` → one result) or many contexts of one query (list → list).

        A sentence is kept when the mean keep-probability of its tokens passes ``threshold``
        (default: the model's saved ``default_threshold``; 0.1 is conservative, 0.5 prunes harder). Long contexts are split into windows and merged.
        ``keep_top_context`` (default: the model's saved setting) keeps the best sentence of the top-ranked context even below the threshold.
        """
        results = self.prune_batch([(query, contexts)], threshold=threshold, batch_size=batch_size,
                                   show_progress_bar=show_progress_bar, keep_top_context=keep_top_context)[0]  # fmt: skip
        return results[0] if isinstance(contexts, str) else results

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 16) -> list[float]:
        """Rerank scores (sigmoid) for (query, passage) pairs, like CrossEncoder.predict."""
        if self.mode != "reranking_pruning":
            raise ValueError("predict needs a 'reranking_pruning' model; this one is 'pruning_only'.")
        results = self.prune_batch([(q, [p]) for q, p in pairs], batch_size=batch_size, show_progress_bar=False)
        return [r[0].reranking_score for r in results]  # type: ignore[misc]
