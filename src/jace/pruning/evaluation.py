"""Evaluating a PruningEncoder on held-out rows: answer retention, compression, sentence F2, reranking."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import fbeta_score, ndcg_score

from jace.metrics import rankable, relevant_rank
from jace.pruning.encoder import PruningEncoder, PruningResult
from jace.pruning.selection import keep_masks
from jace.pruning.sentences import compression_rate, join_kept

DEFAULT_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7)


def evaluate_rows(
    encoder: PruningEncoder,
    rows: Sequence[dict[str, Any]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    batch_size: int = 16,
    k: int = 3,
    target_has_answer: float | None = None,
    keep_top_context: bool | None = None,
) -> dict[str, Any]:
    """Run the model once, then score every threshold from the same sentence probabilities.

    With ``target_has_answer`` (e.g. 0.95) the report also gives ``threshold_for_target``: the
    highest threshold on a 0.01 grid whose has-answer rate reaches the target, with its metrics.

    The model scores the rows' own sentences (``context_spans``), so sentence labels and
    predictions always refer to the same text. Per threshold: has-answer rate (an answer string
    survives in the pruned positive), compression on relevant (label 1) and irrelevant (label 0)
    texts (one definition: the share of sentence characters removed), and sentence-level F2 on
    relevant texts. Reranking (threshold-free): MRR and nDCG@k of each query's texts by rerank
    score, over queries where ranking is defined (two or more texts, not all of one label); the
    others are counted as ``n_queries_unrankable``. ``keep_top_context`` (default: the model's saved
    setting, as for ``prune()``) applies :func:`~jace.pruning.selection.keep_masks`' floor at every
    threshold; the report records the setting it used.
    """
    keep_top_context = encoder.keep_top_context if keep_top_context is None else keep_top_context
    results = encoder.prune_batch(
        [(row["query"], row["texts"]) for row in rows], threshold=0.0, batch_size=batch_size,
        sentence_spans=[row["context_spans"] for row in rows], keep_top_context=False,
    )  # fmt: skip
    return _report(rows, results, thresholds, k=k, target_has_answer=target_has_answer, keep_top_context=keep_top_context)


def random_baseline(
    rows: Sequence[dict[str, Any]],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    seed: int = 0,
    k: int = 3,
    target_has_answer: float | None = None,
    keep_top_context: bool = False,
) -> dict[str, Any]:
    """The same report for a pruner that knows nothing: each sentence's keep probability and each
    text's rerank score are uniform random, so at threshold ``t`` it keeps about ``1 - t`` of the
    sentences (threshold 0 keeps all). A trained model's figures mean something only above it.

    Example:
        >>> random_baseline(read_rows("heldout.jsonl"), target_has_answer=0.95)["mrr"]  # doctest: +SKIP
        0.11
    """
    rng = np.random.default_rng(seed)
    results = _fixed_results(rows, lambda spans, relevance: rng.random(len(spans)).tolist(), lambda label: float(rng.random()))
    return _report(rows, results, thresholds, k=k, target_has_answer=target_has_answer, keep_top_context=keep_top_context)


def label_oracle(rows: Sequence[dict[str, Any]], *, k: int = 3) -> dict[str, Any]:
    """The report for a pruner that keeps exactly the labelled sentences and ranks by the labels.

    The ceiling of these rows: its compression is the most a pruner can remove while keeping every
    labelled sentence, and its has-answer rate shows how often the labels themselves hold an answer
    string. ``sweep`` has one row (any threshold in [0, 1) gives the same).

    Example:
        >>> label_oracle(read_rows("heldout.jsonl"))["sweep"][0]["compression_relevant"]  # doctest: +SKIP
        0.58
    """
    results = _fixed_results(rows, lambda spans, relevance: [float(r) for r in relevance], float)
    return _report(rows, results, (0.5,), k=k, target_has_answer=None)


def reranker_baseline(
    reranker: str | Path, rows: Sequence[dict[str, Any]], *, like: PruningEncoder, batch_size: int = 16, k: int = 3
) -> dict[str, Any]:
    """Ranking metrics of a plain reranker (such as the one a pruner was trained from) on the same rows.

    The reranker is scored through ``like``'s windows, length limits, device and precision, so its
    MRR and nDCG@k compare directly with the pruner's: Provence-style training should keep the
    pruner's ranking within about 0.01 of the reranker it started from.

    Example:
        >>> pruner = PruningEncoder.from_pretrained("runs/pruner/final")  # doctest: +SKIP
        >>> reranker_baseline("runs/ja-reranker/final", read_rows("heldout.jsonl"), like=pruner)["mrr"]  # doctest: +SKIP
        0.98
    """
    encoder = PruningEncoder.from_backbone(
        reranker, device=str(like.device), dtype="int8" if like.quantized else like.dtype,
        max_length=like.max_length, max_query_tokens=like.max_query_tokens,
    )  # fmt: skip
    report = evaluate_rows(encoder, rows, (0.5,), batch_size=batch_size, k=k, keep_top_context=False)
    return {"model": str(reranker), **{key: value for key, value in report.items() if key.startswith(("mrr", "ndcg", "n_queries"))}}


def _fixed_results(
    rows: Sequence[dict[str, Any]],
    keep_probabilities: Callable[[list[tuple[int, int]], list[int]], list[float]],
    rerank_score: Callable[[int], float],
) -> list[list[PruningResult]]:
    """Results shaped like ``evaluate_rows``' (pruned at threshold 0), from given per-sentence probabilities and scores."""
    results = []
    for row in rows:
        per_text = []
        for text, spans, relevance, label in zip(row["texts"], row["context_spans"], row["context_spans_relevance"], row["labels"]):
            spans = [tuple(span) for span in spans]
            keep_all = [True] * len(spans)
            per_text.append(PruningResult(
                query=row["query"], context=text, pruned_context=join_kept(text, spans, keep_all),
                kept_sentences=[text[a:b] for a, b in spans], removed_sentences=[], kept_indices=list(range(len(spans))),
                sentence_probabilities=keep_probabilities(spans, relevance), sentence_spans=spans,
                reranking_score=rerank_score(label), compression_rate=compression_rate(spans, keep_all),
            ))  # fmt: skip
        results.append(per_text)
    return results


def _report(rows, results, thresholds, *, k: int, target_has_answer: float | None, keep_top_context: bool = False) -> dict[str, Any]:
    at = lambda t: _at_threshold(rows, results, t, keep_top_context)  # noqa: E731
    report: dict[str, Any] = {"n_queries": len(rows), "keep_top_context": keep_top_context, "sweep": [at(t) for t in thresholds]}
    if target_has_answer is not None:
        grid = sorted({*thresholds, *(i / 100 for i in range(100))})
        reaching = [row for row in map(at, grid)
                    if row["has_answer_rate"] is not None and row["has_answer_rate"] >= target_has_answer]  # fmt: skip
        report["target_has_answer"] = target_has_answer
        # The highest threshold (most pruning) that still keeps the answer often enough; None if none does.
        report["threshold_for_target"] = max(reaching, key=lambda row: row["threshold"]) if reaching else None
    if all(r.reranking_score is not None for per_text in results for r in per_text):
        rr, ndcg = [], []
        for row, per_text in zip(rows, results):
            if not rankable(row["labels"]):
                continue
            scores = [r.reranking_score for r in per_text]
            rr.append(1.0 / relevant_rank(scores, [i for i, label in enumerate(row["labels"]) if label]))
            ndcg.append(float(ndcg_score(np.asarray([row["labels"]]), np.asarray([scores]), k=k)))
        report["mrr"] = float(np.mean(rr)) if rr else None
        report[f"ndcg@{k}"] = float(np.mean(ndcg)) if ndcg else None
        report["n_queries_unrankable"] = len(rows) - len(rr)
    return report


def _at_threshold(rows: Sequence[dict[str, Any]], results: list, threshold: float, keep_top_context: bool) -> dict[str, Any]:
    has_answer, comp_rel, comp_irr, truth, predicted = [], [], [], [], []
    for row, per_text in zip(rows, results):
        masks = keep_masks([r.sentence_probabilities for r in per_text], threshold,
                           scores=[r.reranking_score for r in per_text], keep_top_context=keep_top_context)  # fmt: skip
        for label, relevance, result, kept in zip(row["labels"], row["context_spans_relevance"], per_text, masks):
            compression = compression_rate(result.sentence_spans, kept)
            if label:
                comp_rel.append(compression)
                truth.extend(relevance)
                predicted.extend(int(k_) for k_ in kept)
                if row.get("answers"):
                    text = join_kept(result.context, result.sentence_spans, kept)
                    has_answer.append(any(answer in text for answer in row["answers"]))
            else:
                comp_irr.append(compression)
    mean = lambda values: float(np.mean(values)) if values else None  # noqa: E731
    return {
        "threshold": threshold,
        "has_answer_rate": mean(has_answer),
        "compression_relevant": mean(comp_rel),
        "compression_irrelevant": mean(comp_irr),
        "sentence_f2": float(fbeta_score(truth, predicted, beta=2, zero_division=0.0)) if truth else None,
    }


def save_default_threshold(encoder: PruningEncoder, folder: str | Path, report: dict[str, Any], data: str) -> Path:
    """Save ``report``'s threshold for its has-answer target as the model's default, with the held-out metrics.

    The folder is re-saved through :meth:`PruningEncoder.save_pretrained`, so ``config.json`` gets
    ``default_threshold`` and ``keep_top_context`` (the rule the report was scored with), and the
    model card records them and the metrics; other files stay.
    """
    chosen = report.get("threshold_for_target")
    if chosen is None:
        raise ValueError(f"no threshold reaches has-answer {report.get('target_has_answer')} on {data}; nothing saved.")
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{folder}: --save-threshold needs a local PruningEncoder folder.")
    if encoder.quantized or encoder.dtype != torch.float32:  # evaluated in bf16/int8: re-save the exact fp32 weights
        encoder = type(encoder).from_pretrained(folder, device="cpu", dtype="float32")
    keep_top_context = bool(report.get("keep_top_context", False))
    encoder.model.config.default_threshold = float(chosen["threshold"])
    encoder.model.config.keep_top_context = keep_top_context
    encoder.metadata["evaluation"] = {
        "data": str(data), "queries": report["n_queries"], "target_has_answer": report["target_has_answer"],
        "keep_top_context": keep_top_context,
        "at_default_threshold": chosen, **{k: v for k, v in report.items() if k.startswith(("mrr", "ndcg"))},
    }  # fmt: skip
    return encoder.save_pretrained(folder, overwrite=True)


def format_sweep(report: dict[str, Any]) -> str:
    """A markdown table of the threshold sweep, plus the reranking figures."""
    lines = ["| threshold | has-answer | compression (relevant) | compression (irrelevant) | sentence F2 |", "|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for row in report["sweep"]:
        mark = " (model default)" if row["threshold"] == report.get("default_threshold") else ""
        lines.append(
            f"| {row['threshold']:g}{mark} | {fmt(row['has_answer_rate'])} | {fmt(row['compression_relevant'])} | "
            f"{fmt(row['compression_irrelevant'])} | {fmt(row['sentence_f2'])} |"
        )
    if report.get("keep_top_context"):
        lines.append("")
        lines.append("keep_top_context on: each query's top-ranked context keeps at least its best sentence")
    extra = {k: v for k, v in report.items() if k.startswith(("mrr", "ndcg")) and v is not None}
    if extra:
        lines.append("")
        lines.append("reranking: " + ", ".join(f"{k} {v:.3f}" for k, v in extra.items()))
    if "target_has_answer" in report:
        chosen = report["threshold_for_target"]
        lines.append("")
        lines.append(
            f"threshold for has-answer >= {report['target_has_answer']}: "
            + ("none reaches it" if chosen is None else f"{chosen['threshold']:.2f} (has-answer {fmt(chosen['has_answer_rate'])}, "
               f"compression {fmt(chosen['compression_relevant'])} / {fmt(chosen['compression_irrelevant'])}, F2 {fmt(chosen['sentence_f2'])})")
        )  # fmt: skip
    return "\n".join(lines)


def plot_sweep(report: dict[str, Any], path: str | Path) -> Path:
    """Save a PNG of has-answer rate, F2 and compression against the threshold."""
    from jace.plotting import new_figure, save_figure

    sweep = report["sweep"]
    x = [row["threshold"] for row in sweep]
    fig, ax = new_figure()
    for key, label in (
        ("has_answer_rate", "has-answer rate"),
        ("sentence_f2", "sentence F2"),
        ("compression_relevant", "compression (relevant)"),
        ("compression_irrelevant", "compression (irrelevant)"),
    ):
        ys = [row[key] for row in sweep]
        if any(y is not None for y in ys):
            ax.plot(x, [np.nan if y is None else y for y in ys], marker="o", label=label)
    ax.set_xlabel("threshold")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("PruningEncoder threshold sweep")
    return save_figure(fig, path)
