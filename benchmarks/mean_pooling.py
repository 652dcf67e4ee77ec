"""Does a head on mean-pooled states learn faster than BERT's [CLS] pooler on e5? (issue 8, part 1)

e5 was trained with mean pooling, and its [CLS] state barely varies across inputs. Two measurements:

  probe     Ridge regression (scikit-learn, alpha by cross-validation) on the *frozen* backbone's
            last-layer [CLS] state, its masked mean over the tokens, and both, with each pair read as
            one cross-encoder input: training rows → Spearman on the validation split. It shows how
            much each pooling hands a new head before any fine-tuning.
  backbone  Write a copy of the backbone with one more BERT layer that computes, at [CLS],
            LayerNorm([CLS] + masked mean of the last layer) through the backbone's own final
            LayerNorm: query weights 0 (so every token attends uniformly to the unmasked tokens),
            key/value/output weights the identity, the feed-forward branch's output 0, plus an
            identity pooler. It is a plain BertModel folder (no remote code), so `jace train --model
            OUT` trains a standard BertForSequenceClassification that reads mean-pooled states (and
            can learn attention pooling: the query weights train). Train it with bench_japanese.py.

Run:
  .venv/bin/python benchmarks/mean_pooling.py probe --model runs/e5 --task jsts
  .venv/bin/python benchmarks/mean_pooling.py backbone --model runs/e5 --output runs/e5-meanpool
  .venv/bin/python benchmarks/bench_japanese.py --study jsts --model runs/e5-meanpool --epochs 1 --only "full fine-tuning lr 8e-5"
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from common import data_file, machine

TASKS = {  # file, first column, second column, label
    "jsts": ("jsts_train.jsonl", "jsts_valid.jsonl", "sentence1", "sentence2", "label"),
    "humor": ("humor_train.csv", "humor_validation.csv", "odai", "response", "score"),
}


def read(name: str) -> pd.DataFrame:
    path = data_file(name)
    return pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_csv(path)


def pooled_states(model, tokenizer, frame: pd.DataFrame, first: str, second: str, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Last-layer [CLS] states and masked means, one row per pair."""
    cls, mean = [], []
    for start in range(0, len(frame), batch_size):
        rows = frame.iloc[start : start + batch_size]
        batch = tokenizer(list(rows[first]), list(rows[second]), padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode():
            states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        cls.append(states[:, 0])
        mean.append((states * mask).sum(1) / mask.sum(1))
    return torch.cat(cls).numpy(), torch.cat(mean).numpy()


def probe(args: argparse.Namespace) -> None:
    from scipy.stats import spearmanr
    from sklearn.linear_model import RidgeCV
    from transformers import AutoModel, AutoTokenizer

    train_file, valid_file, first, second, label = TASKS[args.task]
    train = read(train_file).sample(n=args.train_rows, random_state=0) if args.train_rows else read(train_file)
    valid = read(valid_file)
    tokenizer, model = AutoTokenizer.from_pretrained(args.model), AutoModel.from_pretrained(args.model).eval()
    (cls_train, mean_train), (cls_valid, mean_valid) = (pooled_states(model, tokenizer, f, first, second) for f in (train, valid))
    features = {
        "[CLS]": (cls_train, cls_valid),
        "masked mean": (mean_train, mean_valid),
        "[CLS] + mean (the added layer's sum)": (cls_train + mean_train, cls_valid + mean_valid),
        "[CLS] and mean, concatenated": (np.hstack([cls_train, mean_train]), np.hstack([cls_valid, mean_valid])),
    }
    for name, (_, x_valid) in list(features.items())[:2]:  # how alike the states of different pairs are
        unit = x_valid[:64] / np.linalg.norm(x_valid[:64], axis=1, keepdims=True)
        cosine = unit @ unit.T
        print(json.dumps({"task": args.task, "features": name, "mean_pairwise_cosine_64_pairs": round(float(cosine[~np.eye(64, dtype=bool)].mean()), 3)}))
    for name, (x_train, x_valid) in features.items():
        ridge = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(x_train, train[label].to_numpy())
        rho = spearmanr(ridge.predict(x_valid), valid[label].to_numpy()).statistic
        print(json.dumps({"task": args.task, "features": name, "train_rows": len(train), "valid_spearman": round(float(rho), 4)}, ensure_ascii=False))


def backbone(args: argparse.Namespace) -> None:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(args.model, add_pooling_layer=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    last = model.encoder.layer[-1]
    layer, hidden = copy.deepcopy(last), model.config.hidden_size
    eye = torch.eye(hidden)
    with torch.no_grad():
        attention = layer.attention
        attention.self.query.weight.zero_()  # uniform attention over the unmasked tokens: the masked mean
        attention.self.query.bias.zero_()
        for linear in (attention.self.key, attention.self.value, attention.output.dense):
            linear.weight.copy_(eye)
            linear.bias.zero_()
        attention.output.LayerNorm.weight.fill_(1.0)
        attention.output.LayerNorm.bias.zero_()
        layer.output.dense.weight.zero_()  # feed-forward branch starts silent; its LayerNorm is the backbone's final one
        layer.output.dense.bias.zero_()
        model.pooler.dense.weight.copy_(eye)
        model.pooler.dense.bias.zero_()
    model.encoder.layer.append(layer)
    model.config.num_hidden_layers += 1
    # Check the construction on a few pairs: [CLS] out = LN_final(LN(h_cls + masked mean of h)).
    batch = tokenizer(["今日は晴れ", "猫が好き"], ["明日は雨", "犬も好き、とても"], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True)
        norm = last.output.LayerNorm
    before, after = states.hidden_states[-2], states.last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(before.dtype)
    with torch.no_grad():
        mixed = torch.nn.functional.layer_norm(before[:, 0] + (before * mask).sum(1) / mask.sum(1), (hidden,), eps=model.config.layer_norm_eps)
        expected = torch.nn.functional.layer_norm(mixed, (hidden,), norm.weight, norm.bias, eps=model.config.layer_norm_eps)
    error = float((after[:, 0] - expected).abs().max())
    if error > 1e-4:
        raise SystemExit(f"the added layer does not compute the masked mean (max error {error:.2e})")
    Path(args.output).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.output)
    tokenizer.save_pretrained(args.output)
    print(f"wrote {args.output}: {model.config.num_hidden_layers} layers, [CLS] check max error {error:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("probe", help="linear probes of [CLS] against mean-pooled frozen states")
    p.add_argument("--model", default="runs/e5")
    p.add_argument("--task", choices=sorted(TASKS), default="jsts")
    p.add_argument("--train-rows", type=int, default=3000, help="training rows to fit on (0: all)")
    b = sub.add_parser("backbone", help="write the backbone plus a mean-pooling layer")
    b.add_argument("--model", default="runs/e5")
    b.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(machine(), flush=True)
    probe(args) if args.command == "probe" else backbone(args)


if __name__ == "__main__":
    main()
