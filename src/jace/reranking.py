"""Training a ranking cross-encoder from (query, positive, negatives), and evaluating it by MRR/nDCG.

Training runs on sentence-transformers' ``CrossEncoderTrainer`` with its losses
(``MultipleNegativesRankingLoss`` for the listwise softmax over one positive, its hard negatives and
texts of other queries in the batch; ``BinaryCrossEntropyLoss``; ``LambdaLoss``); jace adds the data format, LoRA or full fine-tuning, a time budget, and an atomic,
merged output folder that jace, ``AutoModelForSequenceClassification`` and ``CrossEncoder`` load.

Rows are ``{"query": str, "positive": str, "negatives": [str, ...]}``, or the pruning rows that
``jace build-pruning-data`` writes (``query``, ``texts``, ``labels``: one text labelled 1).
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from jace.atomic import atomic_directory
from jace.config import RerankerTrainingConfig
from jace.data import HUMOR, DataValidationError, PairColumns, iter_jsonl, load_pairs, prompt_groups
from jace.metrics import reranking_metrics

SUMMARY_FILE = "training_summary.json"


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def ranking_rows(rows: Iterable[dict[str, Any]], source: str = "<rows>") -> list[dict[str, Any]]:
    """Validate rows into ``{"query", "positive", "negatives"}``; pruning rows (texts + labels) are converted.

    Rows whose ``labels`` are graded (not one 1 and the rest 0: e.g. the human scores of every
    answer to one お題) stay lists, ``{"query", "texts", "labels"}``, for the LambdaLoss. Errors
    name the source, the row number and the field.

    Example:
        >>> ranking_rows([{"query": "猫の好物は？", "texts": ["魚が好き。", "車が好き。"], "labels": [1, 0]}])
        [{'query': '猫の好物は？', 'positive': '魚が好き。', 'negatives': ['車が好き。']}]
    """
    checked = []
    for number, row in enumerate(rows, start=1):
        where = f"{source} row {number}"
        if not isinstance(row, dict) or not _text(row.get("query")):
            raise DataValidationError(f"{where}, field 'query': missing, empty or not text.")
        if "texts" in row and "positive" not in row:
            texts, labels = row.get("texts"), row.get("labels")
            if not isinstance(texts, list) or not isinstance(labels, list) or len(texts) != len(labels):
                raise DataValidationError(f"{where}: 'texts' and 'labels' must be lists of the same length.")
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in labels) or not all(_text(t) for t in texts):
                raise DataValidationError(f"{where}: 'labels' must be finite numbers and 'texts' non-empty texts.")
            positives = [i for i, label in enumerate(labels) if label == 1]
            if len(positives) != 1 or any(label not in (0, 1) for label in labels):
                checked.append({"query": row["query"], "texts": list(texts), "labels": [float(v) for v in labels]})
                continue
            positive, negatives = texts[positives[0]], [t for i, t in enumerate(texts) if i != positives[0]]
        else:
            positive, negatives = row.get("positive"), row.get("negatives", [])
        if not _text(positive):
            raise DataValidationError(f"{where}, field 'positive': missing, empty or not text.")
        if not isinstance(negatives, list) or not all(_text(n) for n in negatives):
            raise DataValidationError(f"{where}, field 'negatives': must be a list of non-empty texts.")
        checked.append({"query": row["query"], "positive": positive, "negatives": list(negatives)})
    if not checked:
        raise DataValidationError(f"{source}: no rows.")
    return checked


def graded_lists(frame: Any, columns: PairColumns = HUMOR) -> list[dict[str, Any]]:
    """Scored pairs (e.g. humor: お題, 回答, score) as one graded list per prompt.

    Example:
        >>> graded_lists(load_humor("humor_train.csv"))[0]  # doctest: +SKIP
        {'query': 'お題…', 'texts': ['回答1', …], 'labels': [2.67, …]}
    """
    groups = prompt_groups(frame, columns)
    return [
        {"query": str(part[columns.first].iloc[0]), "texts": part[columns.second].tolist(), "labels": part[columns.label].astype(float).tolist()}
        for _, part in frame.groupby(groups.to_numpy(), sort=False)
    ]


def read_ranking_rows(source: str | Path | Sequence[dict[str, Any]], columns: PairColumns = HUMOR) -> list[dict[str, Any]]:
    """Read and validate ranking rows: a JSONL file of rows, a list of rows, or a table of scored pairs
    (CSV/Parquet with ``columns``, grouped into one graded list per prompt)."""
    if isinstance(source, (str, Path)) and Path(source).suffix.lower() in (".csv", ".parquet", ".tsv"):
        return ranking_rows(graded_lists(load_pairs(source, columns), columns), str(source))
    if isinstance(source, (str, Path)):
        return ranking_rows((row for _, row in iter_jsonl(source)), str(source))
    return ranking_rows(source)


def _training_dataset(rows: list[dict[str, Any]], config: RerankerTrainingConfig):
    """The columns each loss expects: (query, positive, negative_1..k) for listwise, (query, docs, labels) for
    LambdaLoss, (query, text, label) pairs for BCE. Each row's negatives are sampled (with replacement only when
    it has fewer than ``num_negatives``)."""
    from datasets import Dataset

    rng = random.Random(config.seed)
    graded = [row for row in rows if "texts" in row]
    if graded and config.loss != "lambda":
        raise DataValidationError(
            f"{len(graded)} row(s) are graded lists (labels other than one 1 and 0s); they train with --loss lambda only."
        )
    if config.loss != "bce":  # a list needs something to rank the positive against
        rows = [row for row in rows if len(row.get("texts", ())) > 1 or row.get("negatives")]
        if not rows:
            raise DataValidationError(f"loss {config.loss!r} ranks a positive against negatives, but no row has negatives.")

    def sample(negatives: list[str]) -> list[str]:
        k = config.num_negatives
        if config.loss == "listwise" and len(negatives) < k:  # every list needs k columns
            return rng.sample(negatives, len(negatives)) + rng.choices(negatives, k=k - len(negatives))
        return rng.sample(negatives, min(k, len(negatives)))

    if config.loss == "lambda":
        return _lambda_lists(rows, config, sample)
    lists = [(row["query"], row["positive"], sample(row["negatives"])) for row in rows]
    if config.loss == "bce":
        pairs = [(q, text, float(i == 0)) for q, positive, negatives in lists for i, text in enumerate([positive, *negatives])]
        return Dataset.from_dict({"query": [p[0] for p in pairs], "text": [p[1] for p in pairs], "label": [p[2] for p in pairs]})
    columns = {"query": [q for q, _, _ in lists], "positive": [p for _, p, _ in lists]}  # listwise
    for j in range(config.num_negatives):
        columns[f"negative_{j + 1}"] = [negatives[j] for _, _, negatives in lists]
    return Dataset.from_dict(columns)


def _lambda_lists(rows: list[dict[str, Any]], config: RerankerTrainingConfig, sample: Any):
    from datasets import Dataset

    # LambdaLoss: graded lists as they are (first max_list_size texts), positive + sampled negatives as 1, 0, …
    lists = [
        (row["query"], row["texts"][: config.max_list_size], row["labels"][: config.max_list_size]) if "texts" in row
        else (row["query"], [row["positive"], *sample(row["negatives"])], None)
        for row in rows
    ]  # fmt: skip
    return Dataset.from_dict(
        {"query": [q for q, _, _ in lists], "docs": [d for _, d, _ in lists],
         "labels": [labels if labels is not None else [1.0] + [0.0] * (len(d) - 1) for _, d, labels in lists]}
    )  # fmt: skip


def _loss(model: Any, config: RerankerTrainingConfig):
    from sentence_transformers.cross_encoder import losses

    if config.loss == "bce":
        return losses.BinaryCrossEntropyLoss(model)
    if config.loss == "lambda":
        return losses.LambdaLoss(model)
    # Softmax cross-entropy of the positive against its hard negatives and in-batch texts of other queries.
    return losses.MultipleNegativesRankingLoss(model, num_negatives=config.in_batch_negatives)


@dataclass
class RerankerTrainingResult:
    """Where the trained reranker went, and the run's summary."""

    final_dir: Path
    summary: dict[str, Any]


def train_reranker(
    model_name_or_path: str | Path,
    train_rows: str | Path | Sequence[dict[str, Any]],
    output_dir: str | Path = "runs/reranker",
    *,
    config: RerankerTrainingConfig | None = None,
    device: str | None = None,
    callbacks: list[Any] | None = None,
    columns: PairColumns = HUMOR,
) -> RerankerTrainingResult:
    """Train a ranking cross-encoder from (query, positive, negatives); write a merged model to ``output_dir/final``.

    ``model_name_or_path`` is a reranker or a bare encoder (a 1-logit head is added; a missing
    pooler starts as the identity). With ``config.method="lora"`` the adapters are merged before
    saving, so the output is always a plain model folder.

    Example:
        >>> result = train_reranker("runs/e5", "jsquad_train.jsonl", "runs/ja-reranker")  # doctest: +SKIP
        >>> RerankerCrossEncoderClient(result.final_dir).rank("質問", ["段落1", "段落2"])  # doctest: +SKIP
    """
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments

    from jace.cross_encoder import load_sequence_regressor
    from jace.device import resolve_device
    from jace.export import SIGMOID
    from jace.trainer import bind_time_budget, common_arguments, run_training, with_budget
    from jace.training import trainable_model

    config = config or RerankerTrainingConfig()
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output_dir {output_dir} is a file; pass a folder for the run.")
    rows = read_ranking_rows(train_rows, columns)
    dataset = _training_dataset(rows, config)
    skipped = len(rows) - dataset.num_rows if config.loss != "bce" else 0  # rows with nothing to rank against
    if skipped:
        warnings.warn(f"{skipped} of {len(rows)} queries have no negatives; the {config.loss} loss skips them.", stacklevel=2)
    target = resolve_device(device)
    torch.manual_seed(config.seed)
    cross_encoder = CrossEncoder(str(model_name_or_path), num_labels=1, max_length=config.max_length, device=str(target))
    # jace's loader: the same single-logit head, plus an identity pooler where the checkpoint has none.
    model = load_sequence_regressor(model_name_or_path).to(target)
    model = trainable_model(model, config, target)
    cross_encoder[0].model = model
    args = CrossEncoderTrainingArguments(**common_arguments(config, output_dir, target), save_strategy="no")
    trainer = bind_time_budget(CrossEncoderTrainer(
        model=cross_encoder, args=args, train_dataset=dataset, loss=_loss(cross_encoder, config),
        callbacks=with_budget(callbacks, config.budget_minutes),
    ))  # fmt: skip
    started = time.perf_counter()
    output = run_training(trainer)
    elapsed = time.perf_counter() - started
    trained = cross_encoder[0].model
    if config.method == "lora":
        trained = trained.merge_and_unload()
    trained.requires_grad_(True)  # as a loaded model is: undo frozen embeddings and layers
    trained = trained.float().eval()
    trained.config.sentence_transformers = {"activation_fn": SIGMOID}
    summary = {
        "base_model": str(model_name_or_path),
        "data": {"train": str(train_rows) if isinstance(train_rows, (str, Path)) else "<rows>", "queries": len(rows),
                 "lists": len(dataset),
                 "queries_without_negatives_skipped": skipped},  # fmt: skip
        "hyperparameters": {**asdict(config), "learning_rate": config.lr},
        "metrics": {"train": output.metrics, "train_seconds": elapsed, "epochs_seen": output.metrics.get("epoch")},
        "environment": {"device": str(target), "torch": torch.__version__, "python": platform.python_version()},
    }
    final_dir = output_dir / "final"
    if trainer.is_world_process_zero():
        with atomic_directory(final_dir, overwrite=True) as tmp:
            trained.save_pretrained(tmp)
            cross_encoder.tokenizer.save_pretrained(tmp)
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")
    trainer.accelerator.wait_for_everyone()
    return RerankerTrainingResult(final_dir=final_dir, summary=summary)


def evaluate_reranker(client: Any, rows: str | Path | Sequence[dict[str, Any]], *, k: int = 10, batch_size: int = 32) -> dict[str, Any]:
    """MRR@k and nDCG@k of each query's positive among its positive and all its negatives.

    Rows without negatives are skipped and counted (``n_queries_unrankable``). ``client`` is a :class:`jace.RerankerCrossEncoderClient` (anything with ``run(pairs)``).

    Example:
        >>> evaluate_reranker(RerankerCrossEncoderClient("runs/ja-reranker/final"), "heldout.jsonl")  # doctest: +SKIP
        {'mrr@10': 0.97, 'ndcg@10': 0.98, 'n_queries': 932}
    """
    rows = read_ranking_rows(rows)
    if any("texts" in row for row in rows):
        raise DataValidationError("evaluate_reranker scores rows with one positive; for graded lists (humor) use `jace evaluate`.")
    unrankable = sum(1 for row in rows if not row["negatives"])  # a lone positive is first whatever the model says
    rows = [row for row in rows if row["negatives"]]
    if not rows:
        raise DataValidationError("no row has negatives: there is nothing to rank.")
    pairs = [(row["query"], text) for row in rows for text in (row["positive"], *row["negatives"])]
    flat = client.run(pairs, batch_size=batch_size, raw_scores=True)
    scores, start = [], 0
    for row in rows:
        count = 1 + len(row["negatives"])
        scores.append(flat[start : start + count])
        start += count
    return {**reranking_metrics(scores, [0] * len(rows), k=k), "n_queries_unrankable": unrankable}
