"""Captioning throughput on the tiny random Qwen2.5-VL: batched vs one-at-a-time generation, and the
cost of a fully cached re-run. Measures the pipeline (image loading, hashing, processor, generate),
not caption quality.

Run:  .venv/bin/python benchmarks/bench_caption.py --threads 1 --images 48
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from common import machine  # noqa: E402
from tiny_models import build_tiny_qwen_vl  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from jace.caption import QwenCaptionClient

    folder = build_tiny_qwen_vl(Path(tempfile.mkdtemp()))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (224, 224 + 28 * (i % 3), 3), dtype=np.uint8) for i in range(args.images)]
    common = dict(device="cpu", max_new_tokens=args.max_new_tokens, min_pixels=28 * 28 * 16, max_pixels=28 * 28 * 64)
    print(machine())
    timings = {}
    for name, batch in (("batched", args.batch_size), ("one at a time", 1)):
        client = QwenCaptionClient(str(folder), batch_size=batch, **common)
        client.run(images[:2])  # warm-up
        start = time.perf_counter()
        client.run(images, show_progress_bar=False)
        timings[name] = time.perf_counter() - start
    cache = Path(tempfile.mkdtemp()) / "cache.jsonl"
    client = QwenCaptionClient(str(folder), batch_size=args.batch_size, cache_path=cache, **common)
    start = time.perf_counter()
    client.run(images, show_progress_bar=False)
    cold = time.perf_counter() - start
    rerun = QwenCaptionClient(str(folder), batch_size=args.batch_size, cache_path=cache, **common)
    start = time.perf_counter()
    rerun.run(images, show_progress_bar=False)
    warm = time.perf_counter() - start
    n = len(images)
    print(f"{n} images 224x224..280, tiny Qwen2.5-VL, max_new_tokens={args.max_new_tokens}, batch {args.batch_size}")
    print(f"| batched | {n / timings['batched']:.1f} images/s | {timings['one at a time'] / timings['batched']:.2f}x one-at-a-time |")
    print(f"| one at a time | {n / timings['one at a time']:.1f} images/s | 1.00x |")
    print(f"| cached re-run | {n / warm:.0f} images/s | {warm:.3f}s total, {100 * warm / cold:.1f}% of the cold run ({cold:.2f}s) |")


if __name__ == "__main__":
    main()
