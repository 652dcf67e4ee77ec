"""Inference throughput: jace's RerankerCrossEncoderClient.run vs sentence-transformers CrossEncoder.predict
vs the seed's loop (batches of 32 in input order, padding=True, max_length=512, no sorting).

Run:  .venv/bin/python benchmarks/bench_inference.py --threads 1
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import pandas as pd
import torch

from common import data_file, interleaved, machine, matmul_peak, minilm_path


def seed_loop(model, tokenizer, pairs, batch_size=32):
    scores = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            features = tokenizer(
                [q for q, _ in batch], [p for _, p in batch], padding=True, truncation=True, max_length=512, return_tensors="pt"
            )
            scores.extend(torch.sigmoid(model(**features).logits.squeeze(-1)).tolist())
    return scores


def large_random_model(base: str) -> str:
    """A random model shaped like the default reranker (24 layers, hidden 1024), MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tempfile.mkdtemp(prefix="bench-large-")
    config = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, num_labels=1)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def with_fixed_head(base: str) -> str:
    """MiniLM with one random 1-logit head saved to a folder, so every method scores the same model."""
    from transformers import AutoTokenizer

    from jace.cross_encoder import load_sequence_regressor

    folder = tempfile.mkdtemp(prefix="bench-minilm-")
    torch.manual_seed(0)
    load_sequence_regressor(base).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


def flops(model, lengths) -> float:
    """Useful forward FLOPs: 2·(non-embedding params)·tokens + attention (4·L²·hidden per layer)."""
    cfg = model.config
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    lengths = np.asarray(lengths, dtype=float)
    return float(2 * params * lengths.sum() + 4 * cfg.num_hidden_layers * cfg.hidden_size * (lengths**2).sum())


def bench(name: str, folder: str, pairs, repeats: int) -> list[dict]:
    from sentence_transformers import CrossEncoder

    from jace.cross_encoder import encode_pairs
    from jace.scoring import RerankerCrossEncoderClient

    ours = RerankerCrossEncoderClient(folder, device="cpu")
    ours_bf16 = RerankerCrossEncoderClient(folder, device="cpu", dtype="bfloat16")
    ce = CrossEncoder(folder, device="cpu", max_length=512)
    model, tokenizer = ours.model, ours.tokenizer
    reference = np.asarray(ours.run(pairs, show_progress_bar=False))
    assert np.allclose(ce.predict(pairs), reference, atol=1e-4), "CrossEncoder and jace disagree"
    assert np.allclose(seed_loop(model, tokenizer, pairs), reference, atol=1e-4), "seed loop and jace disagree"
    bf16_error = float(np.abs(np.asarray(ours_bf16.run(pairs)) - reference).max())
    times = interleaved(
        {
            "jace run (fp32)": lambda: ours.run(pairs, show_progress_bar=False),
            "jace run (bf16 opt-in)": lambda: ours_bf16.run(pairs, show_progress_bar=False),
            "CrossEncoder.predict": lambda: ce.predict(pairs, batch_size=32),
            "seed loop": lambda: seed_loop(model, tokenizer, pairs),
        },
        repeats,
    )
    lengths = [len(ids) for ids in encode_pairs(tokenizer, pairs, 512)["input_ids"]]
    useful = flops(model, lengths)
    rows = []
    for method, seconds in times.items():
        rows.append(
            {
                "model": name,
                "method": method,
                "pairs": len(pairs),
                "pairs/s": len(pairs) / seconds,
                "x CrossEncoder": times["CrossEncoder.predict"] / seconds,
                "x seed loop": times["seed loop"] / seconds,
                "GFLOP/s": useful / seconds / 1e9,
            }
        )
    print(f"{name}: bf16 opt-in max |score - fp32 score| = {bf16_error:.2e}; mean tokens/pair {np.mean(lengths):.1f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large-subset", type=int, default=96, help="pairs for the 24-layer model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frame = pd.read_csv(data_file("humor_validation.csv"))
    pairs = list(zip(frame.odai, frame.response))
    base = minilm_path()
    print(machine())
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul peak: fp32 {peak32 / 1e9:.0f} GFLOP/s, bf16 {peak16 / 1e9:.0f} GFLOP/s")
    rows = bench("all-MiniLM-L6-v2 (real)", with_fixed_head(base), pairs, args.repeats)
    rows += bench("random 24L/1024H", large_random_model(base), pairs[: args.large_subset], args.repeats)
    table = pd.DataFrame(rows)
    table["% of fp32 peak"] = 100 * table["GFLOP/s"] * 1e9 / peak32
    print(table.to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
