"""Train a PruningEncoder on JSQuAD-derived data with the all-MiniLM-L6-v2 stand-in (CPU), evaluate on
held-out articles: has-answer rate, compression (relevant / irrelevant), sentence F2, MRR, nDCG@3, and a
threshold sweep (table + PNG).

Run:  .venv/bin/python benchmarks/eval_pruning.py --budget-minutes 15 --threads 2 --out docs/pruning
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from common import data_file, machine, minilm_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--budget-minutes", type=float, default=15.0)
    parser.add_argument("--model", default=None, help="Backbone or reranker to start from (default: the MiniLM stand-in).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--w-rank", type=float, default=0.05, help="ranking-loss weight (Provence: 0.05)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--eval-queries", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--train-negatives", type=int, default=1, help="negatives per training query (held-out keeps 4)")
    parser.add_argument("--out", type=Path, default=Path("docs/pruning"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from jace.pruning import PruningEncoder
    from jace.pruning.data import build_from_squad, split_by_article
    from jace.pruning.evaluation import evaluate_rows, format_sweep, plot_sweep
    from jace.pruning.training import PruningTrainingConfig, train_pruning_encoder

    print(machine())
    squad = data_file("jsquad_valid.json")
    train, _ = split_by_article(build_from_squad(squad, negatives=args.train_negatives), 0.2, seed=42)
    _, held = split_by_article(build_from_squad(squad, negatives=4), 0.2, seed=42)  # same articles held out
    held = held[: args.eval_queries]
    print(f"train {len(train)} queries (1 + {args.train_negatives} texts), held-out {len(held)} queries (1 + 4 texts) from unseen articles")
    encoder = PruningEncoder.from_backbone(args.model or minilm_path(), device="cpu", max_length=args.max_length)
    config = PruningTrainingConfig(learning_rate=args.lr, w_rank=args.w_rank, num_train_epochs=args.epochs, per_device_train_batch_size=16,
                                   max_length=args.max_length, logging_steps=100, budget_minutes=args.budget_minutes)  # fmt: skip
    start = time.perf_counter()
    final = train_pruning_encoder(encoder, train, tempfile.mkdtemp(), config=config, training_data="JSQuAD v1.3 valid (80% of articles)")
    trained_s = time.perf_counter() - start
    encoder = PruningEncoder.from_pretrained(final, device="cpu")
    start = time.perf_counter()
    report = evaluate_rows(encoder, held)
    report["train_seconds"] = trained_s
    report["eval_seconds"] = time.perf_counter() - start
    report["epochs"] = encoder.metadata.get("train_metrics", {}).get("epoch")
    print(format_sweep(report))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "jsquad_minilm_report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_sweep(report, args.out / "jsquad_minilm_sweep.png")
    print(f"train {trained_s:.0f}s, eval {report['eval_seconds']:.0f}s; wrote {args.out}")


if __name__ == "__main__":
    main()
