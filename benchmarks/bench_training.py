"""Training throughput (samples/s): jace's LoRA training (dynamic padding, length-grouped batches)
vs the seed's recipe (every pair padded to 512), same data, model, LoRA config and batch size.

Run:  .venv/bin/python benchmarks/bench_training.py --threads 2 --steps 12
"""

from __future__ import annotations

import argparse
import tempfile
import time

import pandas as pd
import torch

from common import data_file, machine, minilm_path
from seed_recipe import train_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from jace.scoring import RerankerCrossEncoderClient
    from jace.training import LoraTrainingConfig

    frame = pd.read_csv(data_file("humor_train.csv")).sample(n=args.steps * args.batch_size, random_state=0)
    base = minilm_path()
    print(machine())
    samples = args.steps * args.batch_size
    results = {}
    for round_ in range(2):  # two interleaved rounds; the better of each is kept
        client = RerankerCrossEncoderClient(base, device="cpu", dtype="float32")
        start = time.perf_counter()
        client.train_with_lora(
            frame, None, tempfile.mkdtemp(),
            config=LoraTrainingConfig(max_steps=args.steps, per_device_train_batch_size=args.batch_size, logging_steps=1000),
        )  # fmt: skip
        results.setdefault("jace (dynamic padding)", []).append(samples / (time.perf_counter() - start))
        start = time.perf_counter()
        train_seed(base, client.tokenizer, frame.odai, frame.response, frame.score.tolist(), tempfile.mkdtemp(),
                   learning_rate=2e-5, batch_size=args.batch_size, max_steps=args.steps)  # fmt: skip
        results.setdefault("seed recipe (pad to 512)", []).append(samples / (time.perf_counter() - start))
    best = {name: max(values) for name, values in results.items()}
    seed = best["seed recipe (pad to 512)"]
    print(f"{samples} samples ({args.steps} steps × {args.batch_size}), MiniLM, CPU fp32; includes tokenization and setup")
    for name, value in best.items():
        print(f"| {name} | {value:.2f} samples/s | {value / seed:.2f}x seed |")


if __name__ == "__main__":
    main()
