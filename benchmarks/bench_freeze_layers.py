"""What ``--freeze-layers N`` saves per training step: seconds per step of ``jace train-reranker``.

Each setting (the embeddings and the bottom N encoder layers frozen) trains the same rows for the
same steps with the real ``train_reranker``; the settings alternate over ``--rounds`` rounds, so
machine noise hits all alike, and the steps after the first of each run are timed. Quality at an
equal time budget is a pair of real training runs scored by ``jace evaluate-reranker``
(docs/benchmarks.md), not this script.

Run:  .venv/bin/python benchmarks/bench_freeze_layers.py --model runs/e5 --data runs/jsquad/train.jsonl \\
          --layers 0 6 --steps 8 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from common import machine, step_timer


def seconds_per_step(model: str, rows: list, layers: int, steps: int, max_length: int) -> float:
    from jace.config import RerankerTrainingConfig
    from jace.reranking import train_reranker

    timer = step_timer()
    config = RerankerTrainingConfig(method="full", max_steps=steps, max_length=max_length, freeze_layers=layers, logging_steps=10_000)
    with tempfile.TemporaryDirectory() as out:
        train_reranker(model, rows, out, config=config, device="cpu", callbacks=[timer])
    return timer.mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/e5", help="Backbone (a bare encoder or a reranker folder).")
    parser.add_argument("--data", default="runs/jsquad/train.jsonl", help="(query, positive, negatives) rows (jace build-pruning-data).")
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 4, 6, 8], help="Settings of --freeze-layers to compare.")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from jace.reranking import read_ranking_rows

    rows = read_ranking_rows(args.data)[: args.steps * 4]  # batch size 4 (the train-reranker default)
    print(machine(), f"| model {args.model} | {args.steps} steps × 4 queries (1 positive + 3 negatives), max length {args.max_length}")
    results: dict[int, list[float]] = {layers: [] for layers in args.layers}
    for _ in range(args.rounds):
        for layers in args.layers:
            results[layers].append(seconds_per_step(args.model, rows, layers, args.steps, args.max_length))
    base = statistics.median(results[args.layers[0]])
    print(f"| --freeze-layers | s/step (median of {args.rounds}) | speed vs {args.layers[0]} |\n|---|---|---|")
    for layers, seconds in results.items():
        median = statistics.median(seconds)
        print(f"| {layers} | {median:.2f} | {base / median:.2f}x |")


if __name__ == "__main__":
    main()
