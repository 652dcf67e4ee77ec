"""Pruning training data: validation of the row format, and a builder from SQuAD-format QA data.

One row per query::

    {"query": str, "texts": [str, ...], "labels": [0/1, ...],
     "context_spans": [[[start, end], ...], ...], "context_spans_relevance": [[0/1, ...], ...],
     "teacher_scores": [float, ...]  # optional: the teacher reranker's sigmoid scores, 0..1
     "answers": [str, ...]           # optional, used by evaluation (has-answer rate)}
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jace.bm25 import BM25Index
from jace.data import DataValidationError, iter_jsonl, write_jsonl
from jace.pruning.sentences import split_sentences

REQUIRED = ("query", "texts", "labels", "context_spans", "context_spans_relevance")


def validate_rows(rows: Iterable[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Check every row of the pruning format; errors name the source, the row and the field."""
    checked = []
    for number, row in enumerate(rows, start=1):
        where = f"{source} row {number}"
        missing = [key for key in REQUIRED if key not in row]
        if missing:
            raise DataValidationError(f"{where}: missing field(s) {missing}; each row needs {list(REQUIRED)}.")
        if not isinstance(row["query"], str) or not row["query"].strip():
            raise DataValidationError(f"{where}, field 'query': empty or not text.")
        texts = row["texts"]
        lengths = {key: len(row[key]) for key in ("texts", "labels", "context_spans", "context_spans_relevance")}
        if "teacher_scores" in row and row["teacher_scores"] is not None:
            lengths["teacher_scores"] = len(row["teacher_scores"])
            if not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in row["teacher_scores"]):
                raise DataValidationError(
                    f"{where}, field 'teacher_scores': values must be the teacher's sigmoid scores in [0, 1], "
                    f"got {row['teacher_scores']!r}."
                )
        if not texts or len(set(lengths.values())) != 1:
            raise DataValidationError(f"{where}: per-text fields must be non-empty and the same length, got {lengths}.")
        for t, (text, spans, relevance) in enumerate(zip(texts, row["context_spans"], row["context_spans_relevance"])):
            if not isinstance(text, str) or not text.strip():
                raise DataValidationError(f"{where}, field 'texts'[{t}]: empty or not text.")
            if len(spans) != len(relevance) or not spans:
                raise DataValidationError(f"{where}, text {t}: {len(spans)} span(s) but {len(relevance)} relevance value(s).")
            for start, end in spans:
                if not 0 <= start < end <= len(text):
                    raise DataValidationError(f"{where}, field 'context_spans'[{t}]: span [{start}, {end}] is outside the text (length {len(text)}).")
            if any(value not in (0, 1) for value in relevance):
                raise DataValidationError(f"{where}, field 'context_spans_relevance'[{t}]: values must be 0 or 1.")
        checked.append(row)
    if not checked:
        raise DataValidationError(f"{source}: no rows.")
    return checked


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a JSONL file of pruning rows."""
    return validate_rows((row for _, row in iter_jsonl(path)), str(path))


def write_rows(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write pruning rows as JSONL, atomically."""
    return write_jsonl(rows, path)


def add_teacher_scores(rows: list[dict[str, Any]], teacher: Any, *, batch_size: int = 32) -> list[dict[str, Any]]:
    """Set each row's ``teacher_scores``: ``teacher`` (a :class:`~jace.scoring.RerankerCrossEncoderClient`)
    scores every (query, text) pair, sigmoid scores in 0..1, in one batched pass over all rows.

    Example:
        >>> rows = add_teacher_scores(read_rows("train.jsonl"), RerankerCrossEncoderClient("runs/ja-reranker/final"))  # doctest: +SKIP
    """
    pairs = [(row["query"], text) for row in rows for text in row["texts"]]
    scores = iter(teacher.run(pairs, batch_size=batch_size))
    for row in rows:
        row["teacher_scores"] = [next(scores) for _ in row["texts"]]
    return rows


def _relevance(spans: list[tuple[int, int]], answers: list[tuple[int, int]]) -> list[int]:
    return [int(any(start < a_end and a_start < end for a_start, a_end in answers)) for start, end in spans]


#: How ``build_from_squad`` picks a question's negatives among the other paragraphs of its article.
NEGATIVE_SELECTIONS = ("random", "bm25")


def build_from_squad(
    path: str | Path, *, negatives: int = 4, seed: int = 42, negative_selection: str = "random"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(article_title, row)`` from a SQuAD-format file (e.g. JSQuAD).

    The question's own paragraph is the positive text; the sentence(s) holding an answer span
    are relevant. Up to ``negatives`` other paragraphs of the same article are negatives: a random
    sample (``negative_selection="random"``), or the hard negatives, the ones BM25 over MeCab tokens
    ranks highest for the question (``"bm25"``, hardest first; the article is the BM25 index).

    Example:
        >>> rows = [row for _, row in build_from_squad("jsquad_valid.json", negatives=3, negative_selection="bm25")]  # doctest: +SKIP
    """
    if negative_selection not in NEGATIVE_SELECTIONS:
        raise ValueError(f"negative_selection={negative_selection!r}: use one of {', '.join(NEGATIVE_SELECTIONS)}.")
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if "data" not in data:
        raise DataValidationError(f"{path}: not SQuAD format (no top-level 'data').")
    rng = random.Random(seed)
    for article in data["data"]:
        paragraphs = [p["context"] for p in article["paragraphs"]]
        spans = [split_sentences(context) for context in paragraphs]
        index = BM25Index(paragraphs) if negative_selection == "bm25" and negatives and len(paragraphs) > 1 else None
        for p_index, paragraph in enumerate(article["paragraphs"]):
            others = [i for i in range(len(paragraphs)) if i != p_index]
            for qa in paragraph["qas"]:
                answers = [(a["answer_start"], a["answer_start"] + len(a["text"])) for a in qa.get("answers", [])]
                if not answers or qa.get("is_impossible"):
                    continue
                if index is None:
                    chosen = rng.sample(others, min(negatives, len(others)))
                else:  # highest BM25 first; ties keep the article's order
                    scores = index.scores(qa["question"])
                    chosen = sorted(others, key=lambda i: -scores[i])[:negatives]
                texts = [paragraphs[p_index]] + [paragraphs[i] for i in chosen]
                all_spans = [spans[p_index]] + [spans[i] for i in chosen]
                relevance = [_relevance(spans[p_index], answers)] + [[0] * len(spans[i]) for i in chosen]
                yield article.get("title", ""), {
                    "query": qa["question"],
                    "texts": texts,
                    "labels": [1] + [0] * len(chosen),
                    "context_spans": [[list(s) for s in text_spans] for text_spans in all_spans],
                    "context_spans_relevance": relevance,
                    "answers": sorted({a["text"] for a in qa["answers"]}),
                }


def split_by_article(
    pairs: Iterable[tuple[str, dict[str, Any]]], holdout_fraction: float, seed: int = 42
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split rows into (train, held-out) by article, so no article is in both."""
    pairs = list(pairs)
    titles = sorted({title for title, _ in pairs})
    random.Random(seed).shuffle(titles)
    held = set(titles[: int(round(len(titles) * holdout_fraction))])
    return [r for t, r in pairs if t not in held], [r for t, r in pairs if t in held]
