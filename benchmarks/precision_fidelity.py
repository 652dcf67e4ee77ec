"""Fidelity of jace's reduced-precision CPU paths: bf16 (what ``dtype="auto"`` picks on CPUs with
native bf16) and int8, against fp32 on trained models: the Spearman correlation of their scores
with fp32's, the largest score difference, and the change in each task's quality metric.

* humor: a humor model trained by jace, on the first ``--pairs`` validation pairs (Spearman and
  per-prompt Spearman against the human scores);
* JSTS: a JSTS model trained by jace, on the whole JSTS validation split (Spearman).

Run:  .venv/bin/python benchmarks/precision_fidelity.py --humor runs/bench_japanese/humor/lora_lr_3e-4/final \
          --jsts runs/bench_japanese/jsts/full_fine-tuning_lr_8e-5/final --pairs 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from common import data_file, machine

JSTS_COLUMNS = dict(first="sentence1", second="sentence2", label="label", group=None)


def compare(task: str, model: str, frame: pd.DataFrame, columns, dtypes: list[str]) -> list[dict]:
    from jace.data import prompt_groups
    from jace.metrics import evaluate_predictions
    from jace.scoring import RerankerCrossEncoderClient

    pairs = list(zip(frame[columns.first], frame[columns.second]))
    groups = prompt_groups(frame, columns).tolist() if columns.group else None
    truth = frame[columns.label].to_numpy(float)
    scores = {dtype: np.asarray(RerankerCrossEncoderClient(model, device="cpu", dtype=dtype).run(pairs, show_progress_bar=False))
              for dtype in ["float32", *dtypes]}  # fmt: skip
    rows = []
    for dtype, values in scores.items():
        overall = evaluate_predictions(truth, values, groups)["overall"]
        rows.append({
            "task": task, "pairs": len(pairs), "dtype": dtype,
            "spearman vs fp32": spearmanr(values, scores["float32"]).statistic,
            "max |Δ score|": float(np.abs(values - scores["float32"]).max()),
            "quality: Spearman": overall["spearman"],
            "Δ Spearman": overall["spearman"] - evaluate_predictions(truth, scores["float32"], groups)["overall"]["spearman"],
            "quality: per-prompt Spearman": overall.get("spearman_per_prompt"),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--humor", help="A humor model trained by jace (adapter or merged folder).")
    parser.add_argument("--jsts", help="A JSTS model trained by jace.")
    parser.add_argument("--pairs", type=int, default=2000, help="humor validation pairs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "int8"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("JACE_CACHE_DIR", tempfile.mkdtemp())
    from jace.data import HUMOR, PairColumns, load_humor, load_pairs
    from jace.device import cpu_has_native_bf16, resolve_dtype
    from jace.quantization import int8_gemm, int8_kernel

    print(machine(), f"| int8 kernel family: {int8_kernel()}, GEMM: {int8_gemm()} | dtype='auto' on this CPU: {resolve_dtype('auto', torch.device('cpu'))}")
    if not cpu_has_native_bf16():
        print("note: no native bf16 here; bf16 figures are exact in value but slow to compute")
    rows = []
    if args.humor:
        rows += compare("humor validation", args.humor, load_humor(data_file("humor_validation.csv")).head(args.pairs), HUMOR, args.dtypes)
    if args.jsts:
        columns = PairColumns(**JSTS_COLUMNS)
        rows += compare("JSTS valid", args.jsts, load_pairs(data_file("jsts_valid.jsonl"), columns), columns, args.dtypes)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
