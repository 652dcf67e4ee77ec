"""Evaluation metrics for pair regression: error, correlation, and per-prompt ranking quality.

NDCG is computed per prompt (one query = the answers to one お題) and averaged. Computing it over
the whole test set as one query, as the seed project did, rewards random predictions (0.93–0.98);
that figure is reported only as ``ndcg@k_global (secondary)``.

A prompt where ranking is undefined is skipped, not scored: one with a single answer, or one
whose answers all have the same gain (all zero would score 0 and all equal would score 1 whatever
the model predicts). Reports count them as ``n_prompts_unrankable``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_squared_error, ndcg_score, r2_score

DEFAULT_KS = (1, 3, 5, 10)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float | None]:
    """MSE, RMSE, R², Pearson and Spearman. Correlations are None when a side is constant.

    Example:
        >>> regression_metrics([0, 1, 2], [0, 1, 2])["spearman"]
        1.0
    """
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"y_true and y_pred must be non-empty and the same length ({t.size} vs {p.size}).")
    mse = mean_squared_error(t, p)
    constant = np.ptp(t) == 0 or np.ptp(p) == 0
    return {
        "mse": float(mse),
        "rmse": float(np.sqrt(mse)),
        "r2": _finite_or_none(r2_score(t, p)) if t.size > 1 else None,
        "pearson": None if constant else _finite_or_none(pearsonr(t, p).statistic),
        "spearman": None if constant else _finite_or_none(spearmanr(t, p).statistic),
    }


def _gains(y_true: np.ndarray) -> np.ndarray:
    # NDCG needs non-negative gains; the humor scale is nominally 0-4 with rare negatives (-1.33).
    return np.clip(y_true, 0.0, None)


def rankable(relevance: Sequence[float] | np.ndarray) -> bool:
    """Whether ranking one query's items is defined: at least two items, and not all of equal gain.

    Example:
        >>> rankable([2.0, 0.0]), rankable([0.0, 0.0]), rankable([3.0])
        (True, False, False)
    """
    gains = _gains(np.asarray(relevance, dtype=float))
    return gains.size >= 2 and bool(np.ptp(gains) > 0)


def per_group_ndcg(
    y_true: Sequence[float], y_pred: Sequence[float], groups: Sequence[Any], k: int
) -> pd.Series:
    """NDCG@k for each group (prompt) where ranking is defined (see :func:`rankable`); indexed by group id.

    Example:
        >>> per_group_ndcg([3, 1, 2, 0, 1, 1], [0.9, 0.1, 0.5, 0.2, 0.3, 0.4], ["a", "a", "b", "b", "c", "c"], k=2).round(3).tolist()
        [1.0, 1.0]
    """
    frame = pd.DataFrame({"t": np.asarray(y_true, float), "p": np.asarray(y_pred, float), "g": list(groups)})
    values = {}
    for group, part in frame.groupby("g", sort=True):
        truth = part["t"].to_numpy()
        if rankable(truth):
            values[group] = float(ndcg_score(_gains(truth)[None], part["p"].to_numpy()[None], k=k))
    return pd.Series(values, name=f"ndcg@{k}", dtype=float)


#: Prompts with fewer answers than this are left out of the per-prompt Spearman mean.
MIN_ANSWERS_PER_PROMPT = 5


def per_group_spearman(
    y_true: Sequence[float], y_pred: Sequence[float], groups: Sequence[Any], min_size: int = MIN_ANSWERS_PER_PROMPT
) -> pd.Series:
    """Spearman correlation within each group (prompt) of at least ``min_size`` answers; indexed by group id.

    Groups whose true scores or predictions are all equal have no correlation and are left out.

    Example:
        >>> per_group_spearman([1, 2, 3, 4, 5, 5], [1, 2, 3, 4, 5, 6], list("aaaaaa"), min_size=5).round(3).tolist()
        [0.986]
    """
    frame = pd.DataFrame({"t": np.asarray(y_true, float), "p": np.asarray(y_pred, float), "g": list(groups)})
    values = {}
    for group, part in frame.groupby("g", sort=True):
        if len(part) >= min_size and np.ptp(part["t"]) > 0 and np.ptp(part["p"]) > 0:
            values[group] = float(spearmanr(part["t"], part["p"]).statistic)
    return pd.Series(values, name="spearman_per_prompt", dtype=float)


def global_ndcg(y_true: Sequence[float], y_pred: Sequence[float], k: int) -> float:
    """NDCG@k over all rows as one query: the seed's figure, kept only as a secondary number."""
    return float(ndcg_score(_gains(np.asarray(y_true, float))[None], np.asarray(y_pred, float)[None], k=k))


def evaluate_predictions(
    y_true: Sequence[float],
    y_pred: Sequence[float],
    groups: Sequence[Any] | None = None,
    types: Sequence[Any] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, Any]:
    """Full report: regression metrics, per-prompt NDCG@k, secondary global NDCG, and a per-type breakdown.

    Example:
        >>> report = evaluate_predictions([0, 1, 2, 3], [0.1, 0.4, 0.3, 0.9], groups=["a", "a", "b", "b"])
        >>> sorted(report["overall"])[:3]
        ['mse', 'n', 'n_prompts']
    """
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    overall: dict[str, Any] = {"n": int(t.size), **regression_metrics(t, p)}
    if groups is not None:
        overall["n_prompts"] = int(pd.Series(list(groups)).nunique())
        for k in ks:
            scores = per_group_ndcg(t, p, groups, k)
            overall[f"ndcg@{k}"] = float(scores.mean()) if len(scores) else None
        overall["n_prompts_unrankable"] = overall["n_prompts"] - (len(scores) if ks else 0)
        within = per_group_spearman(t, p, groups)
        # Ranking answers to one お題 is the use: the mean Spearman inside prompts with >= 5 answers.
        overall["spearman_per_prompt"] = float(within.mean()) if len(within) else None
    for k in ks:
        overall[f"ndcg@{k}_global (secondary)"] = global_ndcg(t, p, k)
    report: dict[str, Any] = {"overall": overall}
    if types is not None:
        types_series = pd.Series(list(types))
        breakdown = {}
        for value in sorted(types_series.unique()):
            mask = (types_series == value).to_numpy()
            sub_groups = None if groups is None else [g for g, m in zip(groups, mask) if m]
            part = evaluate_predictions(t[mask], p[mask], sub_groups, None, ks)["overall"]
            breakdown[str(value)] = {key: v for key, v in part.items() if "global" not in key}
        report["by_type"] = breakdown
    return report


def format_report(report: dict[str, Any]) -> str:
    """A readable table of a report from :func:`evaluate_predictions`: one column per row group."""
    columns = {"overall": report["overall"], **report.get("by_type", {})}
    keys = list(dict.fromkeys(key for values in columns.values() for key in values))
    width = max(len(k) for k in keys)
    header = f"{'metric':<{width}}  " + "  ".join(f"{name:>10}" for name in columns)
    lines = [header, "-" * len(header)]
    for key in keys:
        cells = []
        for values in columns.values():
            value = values.get(key)
            cells.append(f"{'-':>10}" if value is None else f"{value:>10.4f}" if isinstance(value, float) else f"{value:>10}")
        lines.append(f"{key:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def save_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write a report as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return path


def plot_report(
    y_true: Sequence[float], y_pred: Sequence[float], groups: Sequence[Any] | None, path: str | Path, k: int = 5
) -> Path:
    """Save a PNG: predicted vs. true scores, and a histogram of per-prompt NDCG@k."""
    from jace.plotting import new_figure, save_figure

    fig, axes = new_figure(2, (11, 4.5))
    axes[0].scatter(y_true, y_pred, s=6, alpha=0.35)
    axes[0].set_xlabel("true score")
    axes[0].set_ylabel("predicted score")
    axes[0].set_title("predicted vs. true")
    if groups is not None:
        scores = per_group_ndcg(y_true, y_pred, groups, k)
        axes[1].hist(scores, bins=20, range=(0, 1))
        axes[1].set_title(f"per-prompt NDCG@{k} (mean {scores.mean():.3f}, {len(scores)} prompts)")
        axes[1].set_xlabel(f"NDCG@{k}")
    else:
        axes[1].set_axis_off()
    return save_figure(fig, path)


def relevant_rank(scores: Sequence[float], relevant: Collection[int]) -> int:
    """1-based rank of the best-placed relevant candidate, the one tie rule of every MRR in jace:
    a non-relevant candidate scoring the same as the best relevant one is ranked above it (a
    model that scores everything alike gets no credit for the candidates' order).

    Example:
        >>> relevant_rank([0.5, 0.5, 0.1], [1])  # a tie counts against the relevant candidate
        2
        >>> relevant_rank([0.2, 0.9, 0.9], [1, 2])
        1
    """
    values = np.asarray(scores, dtype=float)
    if not relevant or not all(0 <= index < len(values) for index in relevant):
        raise ValueError(f"relevant indices {sorted(relevant)} must be non-empty and within the {len(values)} candidates.")
    best = values[list(relevant)].max()
    others = np.ones(len(values), dtype=bool)
    others[list(relevant)] = False
    return 1 + int((values[others] >= best).sum())


def reranking_metrics(scores: Sequence[Sequence[float]], relevant: Sequence[int], k: int = 10) -> dict[str, float]:
    """MRR@k and nDCG@k of one relevant candidate per query, averaged over queries.

    ``scores[q]`` scores query q's candidates; ``relevant[q]`` is the index of its relevant one.
    A tie with the relevant candidate counts against it (:func:`relevant_rank`).

    Example:
        >>> reranking_metrics([[0.9, 0.1], [0.2, 0.8]], [0, 0], k=10)
        {'mrr@10': 0.75, 'ndcg@10': 0.8154648767857288, 'n_queries': 2}
    """
    if len(scores) != len(relevant) or not scores:
        raise ValueError(f"scores and relevant must be non-empty and the same length ({len(scores)} vs {len(relevant)}).")
    reciprocal, ndcg = [], []
    for query_scores, index in zip(scores, relevant):
        if not 0 <= index < len(query_scores):
            raise ValueError(f"relevant index {index} is outside the {len(query_scores)} candidates of its query.")
        rank = relevant_rank(query_scores, [index])
        reciprocal.append(1.0 / rank if rank <= k else 0.0)
        ndcg.append(1.0 / np.log2(rank + 1) if rank <= k else 0.0)
    return {f"mrr@{k}": float(np.mean(reciprocal)), f"ndcg@{k}": float(np.mean(ndcg)), "n_queries": len(scores)}
