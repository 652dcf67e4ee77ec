"""Quality on real data with the all-MiniLM-L6-v2 stand-in, on CPU, under a wall-clock budget per run.

* JSTS train → valid: Spearman (jace recipe).
* humor train → validation: Spearman and per-prompt NDCG@5, jace recipe vs the seed's recipe
  (min-shift targets, pad to 512, MSE on raw logits), same budget, LoRA config and learning rate.

Run:  .venv/bin/python benchmarks/bench_quality.py --budget-minutes 12 --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from common import data_file, machine, minilm_path
from seed_recipe import train_seed

from jace.trainer import TimeBudget


def run_jace(model, train, valid, columns, budget_s, lr, epochs, max_length):
    from jace.scoring import RerankerCrossEncoderClient
    from jace.training import LoraTrainingConfig

    client = RerankerCrossEncoderClient(model, device="cpu", max_length=max_length, dtype="float32")  # trained
    config = LoraTrainingConfig(num_train_epochs=epochs, learning_rate=lr, max_length=max_length, logging_steps=100)
    start = time.perf_counter()
    result = client.train_with_lora(train, None, tempfile.mkdtemp(), config=config, columns=columns, callbacks=[TimeBudget(budget_s / 60)])
    elapsed = time.perf_counter() - start
    scores = client.run(list(zip(valid[columns.first], valid[columns.second])), original_scale=True, show_progress_bar=False)
    epochs_done = result.summary["metrics"]["train"].get("epoch")
    return np.asarray(scores), elapsed, epochs_done


def run_seed(model, train, valid, columns, budget_s, lr, epochs):
    from transformers import AutoTokenizer

    from jace.scoring import RerankerCrossEncoderClient

    tokenizer = AutoTokenizer.from_pretrained(model)
    start = time.perf_counter()
    model, metrics = train_seed(
        model, tokenizer, train[columns.first], train[columns.second], train[columns.label].tolist(),
        tempfile.mkdtemp(), learning_rate=lr, epochs=epochs, callbacks=[TimeBudget(budget_s / 60)],
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    client = RerankerCrossEncoderClient(model, device="cpu")
    client.model = model.merge_and_unload().eval()
    # The seed scored with a sigmoid over a raw-logit regressor; monotone, so ranks are unaffected.
    scores = client.run(list(zip(valid[columns.first], valid[columns.second])), show_progress_bar=False)
    return np.asarray(scores), elapsed, metrics.get("epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget-minutes", type=float, default=12.0)
    parser.add_argument("--model", default=None, help="Backbone folder or hub id (default: the MiniLM stand-in).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--only", choices=["jsts", "humor"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from jace.data import HUMOR, PairColumns, load_humor, load_pairs, prompt_groups
    from jace.metrics import evaluate_predictions

    budget = args.budget_minutes * 60
    model = args.model or minilm_path()
    print(machine(), f"| model {model} | budget {args.budget_minutes} min per run | lr {args.lr}")
    results = {}
    if args.only in (None, "jsts"):
        cols = PairColumns(first="sentence1", second="sentence2", label="label", group=None)
        train = load_pairs(data_file("jsts_train.jsonl"), cols)
        valid = load_pairs(data_file("jsts_valid.jsonl"), cols)
        scores, elapsed, epochs = run_jace(model, train, valid, cols, budget, args.lr, 1.0, 128)
        metrics = evaluate_predictions(valid.label, scores)["overall"]
        results["jsts/jace"] = {"spearman": metrics["spearman"], "pearson": metrics["pearson"], "train_s": elapsed, "epochs": epochs}
        print(results["jsts/jace"])
    if args.only in (None, "humor"):
        train = load_humor(data_file("humor_train.csv"))
        valid = load_humor(data_file("humor_validation.csv"))
        groups = prompt_groups(valid).tolist()
        rng = np.random.default_rng(0)
        random_ndcg = [
            evaluate_predictions(valid.score, rng.random(len(valid)), groups, ks=(5,))["overall"]["ndcg@5"] for _ in range(20)
        ]
        results["humor/random predictions (20 seeds)"] = {"ndcg@5 per prompt": float(np.mean(random_ndcg))}
        print(results["humor/random predictions (20 seeds)"])
        for name, runner in (
            ("humor/jace", lambda: run_jace(model, train, valid, HUMOR, budget, args.lr, 1.0, 512)),
            ("humor/seed recipe", lambda: run_seed(model, train, valid, HUMOR, budget, args.lr, 1.0)),
        ):
            scores, elapsed, epochs = runner()
            overall = evaluate_predictions(valid.score, scores, groups, ks=(5,))["overall"]
            results[name] = {
                "spearman": overall["spearman"],
                "ndcg@5 per prompt": overall["ndcg@5"],
                "rmse": overall["rmse"],
                "train_s": elapsed,
                "epochs": epochs,
            }
            print(name, results[name])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
