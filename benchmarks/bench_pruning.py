"""PruningEncoder speed: one pass of pruning + reranking vs reranking alone (same backbone), vs two
separate models (a reranker plus a token classifier), and sentence-splitting throughput.

Inputs: (question, paragraph) pairs from JSQuAD. Backbone: all-MiniLM-L6-v2 (real weights), or
``--model`` (e.g. the e5 reranker trained by ``jace train-reranker``). Both paths run in fp32.
Run:  .venv/bin/python benchmarks/bench_pruning.py --threads 1 --pairs 256
      .venv/bin/python benchmarks/bench_pruning.py --threads 2 --pairs 128 --model runs/ja-reranker/final
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from common import data_file, interleaved, machine, minilm_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="Backbone reranker folder (default: all-MiniLM-L6-v2).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from jace.pruning import PruningEncoder, split_sentences
    from jace.scoring import RerankerCrossEncoderClient

    squad = json.loads(data_file("jsquad_valid.json").read_text(encoding="utf-8"))
    contexts = [p["context"] for a in squad["data"] for p in a["paragraphs"]]
    pairs = [(qa["question"], p["context"]) for a in squad["data"] for p in a["paragraphs"] for qa in p["qas"]][: args.pairs]
    print(machine())

    chars = sum(len(c) for c in contexts)
    start = time.perf_counter()
    for _ in range(3):
        for context in contexts:
            split_sentences(context)
    split_rate = 3 * chars / (time.perf_counter() - start)
    print(f"sentence splitting: {split_rate / 1e6:.2f} M chars/s over {len(contexts)} JSQuAD paragraphs ({chars} chars)")

    backbone = args.model or minilm_path()
    print(f"backbone: {backbone}")
    reranker = RerankerCrossEncoderClient(backbone, device="cpu", dtype="float32")  # the pruner from_backbone is fp32 too
    both = PruningEncoder.from_backbone(backbone, mode="reranking_pruning", device="cpu")
    both.model.backbone_model.load_state_dict(reranker.model.state_dict())  # same weights, same scores
    token_classifier = PruningEncoder.from_backbone(backbone, mode="pruning_only", device="cpu")
    items = [(q, [c]) for q, c in pairs]
    scores_alone = reranker.run(pairs, batch_size=16, show_progress_bar=False)
    scores_both = [r[0].reranking_score for r in both.prune_batch(items, batch_size=16, show_progress_bar=False)]
    drift = max(abs(a - b) for a, b in zip(scores_alone, scores_both))
    times = interleaved(
        {
            "reranking alone (RerankerCrossEncoderClient.run)": lambda: reranker.run(pairs, batch_size=16, show_progress_bar=False),
            "PruningEncoder: pruning + reranking, one pass": lambda: both.prune_batch(items, batch_size=16, show_progress_bar=False),
            "two models: reranker + token classifier": lambda: (
                reranker.run(pairs, batch_size=16, show_progress_bar=False),
                token_classifier.prune_batch(items, batch_size=16, show_progress_bar=False),
            ),
        },
        args.repeats,
    )
    alone = times["reranking alone (RerankerCrossEncoderClient.run)"]
    one_pass = times["PruningEncoder: pruning + reranking, one pass"]
    print(f"{len(pairs)} (question, paragraph) pairs; max |rerank score difference| one-pass vs alone: {drift:.1e}")
    print("| method | seconds | pairs/s | time vs reranking alone | speed-up of one pass |")
    print("|---|---|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.2f} | {len(pairs) / seconds:.1f} | {seconds / alone:.2f}x | {seconds / one_pass:.2f}x |")


if __name__ == "__main__":
    main()
