"""Trivial and classical humor baselines: the bar every humor model is shown beside.

A neural humor scorer is worth its cost only if it beats these on the same split: random
predictions, the answer's length in characters, the training mean of each ``odai_type``, and a
character n-gram ridge regression (TF-IDF over 1-3-grams of the answer and 1-2-grams of the お題,
plus log length; alpha picked on the evaluation split, so that baseline is optimistic).

Example:
    >>> predictions = humor_baselines(train_frame, valid_frame)  # doctest: +SKIP
    >>> sorted(predictions)  # doctest: +SKIP
    ['char n-gram ridge (alpha 10)', 'random', 'response length (characters)', 'training mean of the odai_type']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jace.data import HUMOR, PairColumns, prompt_groups
from jace.metrics import evaluate_predictions

RIDGE_ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _ngram_features(train: pd.DataFrame, frames: list[pd.DataFrame]) -> list:
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer

    answer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True).fit(train.response)
    prompt = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(train.odai)

    def build(frame: pd.DataFrame):
        length = csr_matrix(np.log1p(frame.response.str.len().to_numpy(float))[:, None])
        return hstack([answer.transform(frame.response), prompt.transform(frame.odai), length]).tocsr()

    return [build(frame) for frame in frames]


def humor_baselines(train: pd.DataFrame, evaluation: pd.DataFrame, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Predictions of each baseline for the rows of ``evaluation`` (humor columns), fitted on ``train``."""
    from sklearn.linear_model import Ridge

    predictions = {
        "random": np.random.default_rng(seed).random(len(evaluation)),
        "response length (characters)": evaluation.response.str.len().to_numpy(float),
        "training mean of the odai_type": evaluation.odai_type.map(train.groupby("odai_type").score.mean())
        .fillna(train.score.mean())
        .to_numpy(float),
    }
    x_train, x_eval = _ngram_features(train, [train, evaluation])
    truth = evaluation.score.to_numpy(float)
    best = None
    for alpha in RIDGE_ALPHAS:
        predicted = Ridge(alpha=alpha).fit(x_train, train.score).predict(x_eval)
        spearman = evaluate_predictions(truth, predicted)["overall"]["spearman"] or -1.0
        if best is None or spearman > best[0]:
            best = (spearman, alpha, predicted)
    predictions[f"char n-gram ridge (alpha {best[1]:g})"] = best[2]
    return predictions


def baseline_metrics(train: pd.DataFrame, evaluation: pd.DataFrame, *, seed: int = 0, columns: PairColumns = HUMOR) -> dict[str, dict]:
    """Every baseline fitted on ``train`` and scored on ``evaluation`` like ``jace evaluate`` scores a model (``overall``).

    Example:
        >>> baseline_metrics(train_frame, valid_frame)["random"]["spearman"]  # doctest: +SKIP
        -0.029
    """
    truth, groups = evaluation.score.to_numpy(float), prompt_groups(evaluation, columns).tolist()
    types = evaluation.odai_type.tolist() if "odai_type" in evaluation.columns else None
    return {
        name: evaluate_predictions(truth, values, groups, types)["overall"]
        for name, values in humor_baselines(train, evaluation, seed=seed).items()
    }


def format_comparison(model: dict, baselines: dict[str, dict], *, name: str = "this model",
                      keys: tuple[str, ...] = ("spearman", "spearman_per_prompt", "ndcg@5")) -> str:  # fmt: skip
    """A model's metrics above each baseline's, one line each (a metric undefined for a row shows as –)."""
    show = lambda value: "  –   " if value is None else f"{value:.4f}"  # noqa: E731
    return "model vs baselines on the same rows:\n" + "\n".join(
        f"  {row:<34}" + "  ".join(f"{key} {show(values.get(key))}" for key in keys)
        for row, values in {name: model, **baselines}.items()
    )
