"""The README's "Prune context for a RAG prompt" example, on a held-out JSQuAD question: prune()
on three passages of one question (its own paragraph and two others of the same article), what
was kept, the compression, and the rerank order.

Run:  .venv/bin/python benchmarks/rag_example.py --model runs/pruner9/run/final --data runs/pruner9/heldout_every6.jsonl --row 3
"""

from __future__ import annotations

import argparse

from jace.pruning import PruningEncoder
from jace.pruning.data import read_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A PruningEncoder folder.")
    parser.add_argument("--data", required=True, help="Held-out pruning rows (build-pruning-data --holdout).")
    parser.add_argument("--row", type=int, default=0, help="Which held-out question.")
    parser.add_argument("--threshold", type=float, default=None, help="Default: the model's saved threshold.")
    args = parser.parse_args()
    row = read_rows(args.data)[args.row]
    passages = [text.split(" [SEP] ", 1)[-1] for text in row["texts"][:3]]  # drop the "title [SEP]" prefix
    encoder = PruningEncoder.from_pretrained(args.model)
    results = encoder.prune(row["query"], passages, threshold=args.threshold)
    print(f"question: {row['query']}  (answer: {' / '.join(row.get('answers', []))})")
    print(f"threshold: {encoder.default_threshold if args.threshold is None else args.threshold:g}\n")
    for i, result in enumerate(results):
        print(f"passage {i} ({'relevant' if row['labels'][i] else 'other paragraph'}), rerank score {result.reranking_score:.3f}, "
              f"compression {result.compression_rate:.0%}")  # fmt: skip
        print(f"  kept: {result.pruned_context or '(nothing)'}\n")
    order = sorted(range(len(results)), key=lambda i: results[i].reranking_score, reverse=True)
    print("rerank order:", order)
    prompt = "\n\n".join(results[i].pruned_context for i in order if results[i].pruned_context)
    total = sum(len(p) for p in passages)
    print(f"prompt context: {len(prompt)} of {total} characters ({1 - len(prompt) / total:.0%} shorter)")


if __name__ == "__main__":
    main()
