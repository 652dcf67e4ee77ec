"""What the PruningEncoder's CPU training options cost and save: seconds per step and peak memory.

Each setting trains the same rows for the same steps with the real `train_pruning_encoder`, in its
own process (so peak RSS is its own), and the steps after the first are timed:

  fp32, embeddings trained        the plain recipe
  fp32, embeddings frozen         --freeze-embeddings (the CPU default)
  bf16 autocast, frozen           the CPU default on native-bf16 CPUs (skipped elsewhere)
  bf16 autocast, trained          --train-embeddings
  bf16 autocast, frozen, ckpt     --gradient-checkpointing
  bf16 autocast, bottom N frozen  --freeze-layers N (N = 3, 6): no backward below layer N

Quality: checkpointing gives the same gradients (tests/test_pruning_inference.py); frozen against
trained embeddings is a pair of equal-budget training runs, scored by `jace evaluate-pruner`
(docs/benchmarks.md).

Run:  .venv/bin/python benchmarks/bench_pruner_training.py --model runs/ja-reranker/final \
          --data runs/pruner9/train.jsonl --steps 6 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {
    "fp32, embeddings trained": {"bf16": False, "freeze_embeddings": False},
    "fp32, embeddings frozen": {"bf16": False, "freeze_embeddings": True},
    "bf16 autocast, embeddings frozen": {"bf16": True, "freeze_embeddings": True},
    "bf16 autocast, embeddings trained": {"bf16": True, "freeze_embeddings": False},
    "bf16 autocast, frozen, gradient checkpointing": {"bf16": True, "freeze_embeddings": True, "gradient_checkpointing": True},
    "bf16 autocast, frozen, bottom 3 layers frozen": {"bf16": True, "freeze_embeddings": True, "freeze_layers": 3},
    "bf16 autocast, frozen, bottom 6 layers frozen": {"bf16": True, "freeze_embeddings": True, "freeze_layers": 6},
}


def worker(args: argparse.Namespace, setting: dict) -> dict:
    import torch
    from common import step_timer

    from jace.pruning import PruningEncoder
    from jace.pruning.data import read_rows
    from jace.pruning.training import PruningTrainingConfig, train_pruning_encoder

    torch.set_num_threads(args.threads)
    rows = read_rows(args.data)[: args.steps * args.batch_size]
    encoder = PruningEncoder.from_backbone(args.model, device="cpu", max_length=args.max_length)
    timer = step_timer()
    config = PruningTrainingConfig(
        max_steps=args.steps, per_device_train_batch_size=args.batch_size, max_length=args.max_length, logging_steps=10_000,
        ranking_loss="mse", freeze_embeddings=setting["freeze_embeddings"],
        gradient_checkpointing=setting.get("gradient_checkpointing", False), freeze_layers=setting.get("freeze_layers", 0),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        train_pruning_encoder(encoder, rows, out, config=config, callbacks=[timer])
    return {"s_per_step": timer.mean(), "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/ja-reranker/final", help="Backbone reranker folder.")
    parser.add_argument("--data", default="runs/pruner9/train.jsonl", help="Training rows (jace build-pruning-data with --teacher).")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=list(SETTINGS), default=None,
                        help="Run only these settings; they run in the order above, and the first that runs is the ratio column's baseline.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args, SETTINGS[args.worker])))
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from common import machine

    from jace.device import cpu_has_native_bf16

    print(machine(), f"| model {args.model} | {args.steps} steps × batch {args.batch_size}, max length {args.max_length}")
    results = {}
    for name, setting in SETTINGS.items():
        if args.only and name not in args.only:
            continue
        if setting["bf16"] and not cpu_has_native_bf16():
            print(f"{name}: skipped (no native bf16 on this CPU)")
            continue
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error",
               "JACE_CPU_DTYPE": "" if setting["bf16"] else "float32"}  # fmt: skip
        command = [sys.executable, __file__, "--worker", name, "--model", args.model, "--data", args.data, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--threads", str(args.threads)]  # fmt: skip
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        results[name] = json.loads(output.strip().splitlines()[-1])
    first = next(iter(results))
    base = results[first]["s_per_step"]
    print(f"| setting | s/step | vs {first} | peak RSS GiB |\n|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['s_per_step']:.2f} | {base / r['s_per_step']:.2f}x | {r['peak_rss_gib']:.2f} |")


if __name__ == "__main__":
    main()
