"""Trivial and classical baselines for humor scoring on the validation split, scored with the same
metrics as `jace evaluate` (jace.metrics.evaluate_predictions): random predictions, response length
in characters, the training mean of each odai_type, and a character n-gram ridge regression
(TF-IDF over 1-3-grams of the answer and 1-2-grams of the お題, plus log length; alpha picked on
validation, as the quality issue specifies, so it is an optimistic baseline).

Run:  .venv/bin/python benchmarks/humor_baselines.py
"""

from __future__ import annotations

import argparse

import pandas as pd

from common import data_file, machine

from jace.baselines import baseline_metrics
from jace.data import load_humor

REPORTED = ("spearman", "pearson", "spearman_per_prompt", "ndcg@5", "rmse")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine())
    train, valid = load_humor(data_file("humor_train.csv")), load_humor(data_file("humor_validation.csv"))
    rows = [{"baseline": name, **{k: overall[k] for k in REPORTED}} for name, overall in baseline_metrics(train, valid, seed=args.seed).items()]
    print(f"validation split: {len(valid)} rows, {valid.odai_id.nunique()} prompts; per-prompt Spearman over prompts with >= 5 answers")
    print(pd.DataFrame(rows).round(4).to_markdown(index=False))


if __name__ == "__main__":
    main()
