"""int8 against fp32 on a trained humor model: score correlation over validation pairs, the quality
metrics of each, and their speed (round-robin), with the CPU capability printed.

Run:  .venv/bin/python benchmarks/int8_fidelity.py --model runs/bench_japanese/humor/lora_lr_3e-4/final --pairs 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import torch
from scipy.stats import spearmanr

from common import data_file, interleaved, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A humor model trained by jace (adapter or merged folder).")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("JACE_CACHE_DIR", tempfile.mkdtemp())
    from jace.data import load_humor, prompt_groups
    from jace.metrics import evaluate_predictions
    from jace.quantization import int8_kernel
    from jace.scoring import RerankerCrossEncoderClient

    print(machine(), f"| int8 kernel family: {int8_kernel()}")
    valid = load_humor(data_file("humor_validation.csv")).head(args.pairs)
    pairs = list(zip(valid.odai, valid.response))
    fp32 = RerankerCrossEncoderClient(args.model, device="cpu")
    int8 = RerankerCrossEncoderClient(args.model, device="cpu", dtype="int8")
    a, b = (np.asarray(c.run(pairs, original_scale=True, show_progress_bar=False)) for c in (fp32, int8))
    print(f"{len(pairs)} pairs: Spearman(int8, fp32) = {spearmanr(a, b).statistic:.5f}, max |Δ score| = {np.abs(a - b).max():.4f}")
    groups = prompt_groups(valid).tolist()
    for name, scores in (("fp32", a), ("int8", b)):
        overall = evaluate_predictions(valid.score.to_numpy(float), scores, groups)["overall"]
        print(f"{name}: Spearman {overall['spearman']:.4f}, per-prompt Spearman {overall['spearman_per_prompt']:.4f}")
    times = interleaved({name: (lambda c=c: c.run(pairs, show_progress_bar=False)) for name, c in (("fp32", fp32), ("int8", int8))}, args.repeats)
    print(f"pairs/s: fp32 {len(pairs) / times['fp32']:.1f}, int8 {len(pairs) / times['int8']:.1f} ({times['fp32'] / times['int8']:.2f}x)")


if __name__ == "__main__":
    main()
