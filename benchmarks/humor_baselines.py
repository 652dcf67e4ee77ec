"""Trivial and classical baselines for humor scoring on the validation split, scored with the same
metrics as `jace evaluate` (jace.metrics.evaluate_predictions): random predictions, response length
in characters, the training mean of each odai_type, and a character n-gram ridge regression
(TF-IDF over 1-3-grams of the answer and 1-2-grams of the お題, plus log length; alpha picked on
validation, as the quality issue specifies, so it is an optimistic baseline).

Run:  .venv/bin/python benchmarks/humor_baselines.py
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge

from common import data_file, machine

from jace.data import load_humor, prompt_groups
from jace.metrics import evaluate_predictions

REPORTED = ("spearman", "pearson", "spearman_per_prompt", "ndcg@5", "rmse")


def ngram_features(train: pd.DataFrame, frames: list[pd.DataFrame]):
    answer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), min_df=2, sublinear_tf=True).fit(train.response)
    prompt = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(train.odai)
    def build(frame):  # noqa: E306
        length = csr_matrix(np.log1p(frame.response.str.len().to_numpy(float))[:, None])
        return hstack([answer.transform(frame.response), prompt.transform(frame.odai), length]).tocsr()
    return [build(frame) for frame in frames]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine())
    train, valid = load_humor(data_file("humor_train.csv")), load_humor(data_file("humor_validation.csv"))
    truth, groups, types = valid.score.to_numpy(float), prompt_groups(valid).tolist(), valid.odai_type.tolist()
    predictions = {
        "random": np.random.default_rng(args.seed).random(len(valid)),
        "response length (characters)": valid.response.str.len().to_numpy(float),
        "training mean of the odai_type": valid.odai_type.map(train.groupby("odai_type").score.mean()).to_numpy(float),
    }
    x_train, x_valid = ngram_features(train, [train, valid])
    best = None
    for alpha in (0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
        predicted = Ridge(alpha=alpha).fit(x_train, train.score).predict(x_valid)
        spearman = evaluate_predictions(truth, predicted)["overall"]["spearman"]
        if best is None or spearman > best[0]:
            best = (spearman, alpha, predicted)
    predictions[f"char n-gram ridge (alpha {best[1]:g})"] = best[2]
    rows = []
    for name, predicted in predictions.items():
        overall = evaluate_predictions(truth, predicted, groups, types)["overall"]
        rows.append({"baseline": name, **{k: overall[k] for k in REPORTED}})
    print(f"validation split: {len(valid)} rows, {valid.odai_id.nunique()} prompts; per-prompt Spearman over prompts with >= 5 answers")
    print(pd.DataFrame(rows).round(4).to_markdown(index=False))


if __name__ == "__main__":
    main()
