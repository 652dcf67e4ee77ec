"""LoRA fine-tuning of a cross-encoder reranker into a regression model.

What the seed got wrong and this module does instead:

* targets are min-max scaled into [0, 1] with a scaler fitted on the training split only, and the
  scaler is saved with the adapter;
* the loss is BCE-with-logits (default) or MSE on the sigmoid, so training and inference agree;
* the classification head is trained and saved (``modules_to_save``) and restored on reload;
* rows are padded per batch (dynamic padding, length-grouped sampling), never all to 512.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, EvalPrediction, Trainer, TrainerCallback, TrainingArguments

from jace.atomic import atomic_directory
from jace.data import HUMOR, PairColumns, load_pairs, prompt_groups
from jace.device import mixed_precision_flags
from jace.metrics import evaluate_predictions
from jace.scaling import TargetScaler

if TYPE_CHECKING:
    from jace.scoring import RerankerCrossEncoderClient

SUMMARY_FILE = "training_summary.json"
HEAD_MODULES = ("classifier", "score")


@dataclass
class LoraTrainingConfig:
    """Hyperparameters for :func:`train_with_lora`. Defaults follow the seed (r=8, alpha=16, dropout 0.1).

    Example:
        >>> LoraTrainingConfig(num_train_epochs=1, loss="mse").loss
        'mse'
    """

    r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling factor (alpha)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch."})
    target_modules: tuple[str, ...] = field(
        default=("query", "key", "value", "dense"), metadata={"help": "Module names that get LoRA adapters."}
    )
    loss: Literal["bce", "mse"] = field(
        default="bce",
        metadata={"help": "'bce': BCE-with-logits against scaled targets; 'mse': MSE between sigmoid(logit) and target."},
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (AdamW, linear decay)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Training epochs."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps to accumulate before an update."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Fraction of steps for linear warm-up."})
    max_length: int = field(default=512, metadata={"help": "Truncate pairs to this many tokens (padding is dynamic)."})
    metric_for_best_model: str = field(
        default="spearman", metadata={"help": "Eval metric that picks the best epoch (e.g. spearman, ndcg@5, loss)."}
    )
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (overrides epochs when > 0)."})
    logging_steps: int = field(default=50, metadata={"help": "Log the training loss every N steps."})
    seed: int = field(default=42, metadata={"help": "Random seed."})

    def __post_init__(self) -> None:
        if self.loss not in ("bce", "mse"):
            raise ValueError(f"loss must be 'bce' or 'mse', got {self.loss!r}.")
        if self.r < 1 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError("r must be >= 1, lora_alpha > 0 and 0 <= lora_dropout < 1.")
        self.target_modules = tuple(self.target_modules)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Help text per field (used by the CLI)."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


@dataclass
class TrainingResult:
    """Where the trained adapter went, and the metrics of its best epoch."""

    final_dir: Path
    metrics: dict[str, Any]
    summary: dict[str, Any]


class RegressionTrainer(Trainer):
    """A Trainer whose loss matches inference: BCE-with-logits, or MSE after the sigmoid."""

    def __init__(self, *args: Any, loss: str = "bce", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_name = loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float().squeeze(-1)
        labels = labels.to(logits.dtype).view_as(logits)
        if self.loss_name == "bce":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        else:
            loss = torch.nn.functional.mse_loss(torch.sigmoid(logits), labels)
        return (loss, outputs) if return_outputs else loss


def _as_frame(data: Any, columns: PairColumns) -> tuple[pd.DataFrame, str]:
    if isinstance(data, Dataset):
        return load_pairs(data.to_pandas(), columns), "<datasets.Dataset>"
    name = "<DataFrame>" if isinstance(data, pd.DataFrame) else str(data)
    return load_pairs(data, columns), name


def build_dataset(
    frame: pd.DataFrame, tokenizer: Any, scaler: TargetScaler, columns: PairColumns, max_length: int
) -> Dataset:
    """Tokenize pairs (no padding) and attach scaled labels and lengths for length-grouped batching."""
    from jace.scoring import encode_pairs

    encoded = encode_pairs(tokenizer, list(zip(frame[columns.first], frame[columns.second])), max_length)
    encoded["labels"] = scaler.transform(frame[columns.label].to_numpy()).astype(np.float32).tolist()
    encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
    return Dataset.from_dict(encoded)


def _metrics_fn(frame: pd.DataFrame, scaler: TargetScaler, columns: PairColumns):
    groups = prompt_groups(frame, columns).tolist()
    truth = frame[columns.label].to_numpy(dtype=float)

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        logits = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1)
        predicted = scaler.inverse_transform(1.0 / (1.0 + np.exp(-logits)))
        overall = evaluate_predictions(truth, predicted, groups, None, ks=(5, 10))["overall"]
        # None (e.g. constant predictions) becomes NaN, which never wins "best model".
        return {
            k.replace("@", "_at_"): (math.nan if v is None else float(v))
            for k, v in overall.items()
            if "global" not in k and k not in ("n", "n_prompts")
        }

    return compute


def _head_modules(model: torch.nn.Module) -> list[str]:
    names = {name.split(".")[0] for name, _ in model.named_children()}
    heads = [name for name in HEAD_MODULES if name in names]
    if not heads:
        raise ValueError(f"Could not find the classification head ({HEAD_MODULES}) in {type(model).__name__}.")
    return heads


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def train_with_lora(
    client: "RerankerCrossEncoderClient",
    train_dataset: Any,
    eval_dataset: Any = None,
    output_dir: str | Path = "runs/reranker-lora",
    *,
    config: LoraTrainingConfig | None = None,
    columns: PairColumns = HUMOR,
    callbacks: list[TrainerCallback] | None = None,
) -> TrainingResult:
    """Fine-tune ``client``'s model with LoRA; write ``output_dir/final`` (adapter, head, tokenizer, scaler, summary).

    Datasets may be DataFrames, ``datasets.Dataset`` objects or file paths with the columns named
    by ``columns`` (humor: ``odai``, ``response``, ``score``). ``callbacks`` are passed to the
    ``Trainer`` (e.g. early stopping or a time budget). Evaluation runs every epoch and
    the best epoch (``config.metric_for_best_model``) is the one saved. Runs unchanged under
    ``torchrun``/``accelerate launch`` (DDP); only the main process writes ``final``.

    Example:
        >>> client = RerankerCrossEncoderClient("path/to/model")  # doctest: +SKIP
        >>> result = client.train_with_lora("train.csv", "valid.csv", "runs/humor")  # doctest: +SKIP
        >>> result.final_dir  # doctest: +SKIP
        PosixPath('runs/humor/final')
    """
    from peft import LoraConfig, TaskType, get_peft_model

    config = config or LoraTrainingConfig()
    if client.adapter_path is not None:
        raise ValueError(
            f"this client already holds an adapter ({client.adapter_path}); a new adapter must start from the "
            "base model. Create a new RerankerCrossEncoderClient(base), or export the merged model "
            "(jace export) and train on that folder."
        )
    output_dir = Path(output_dir)
    train_frame, train_name = _as_frame(train_dataset, columns)
    eval_frame, eval_name = (None, None) if eval_dataset is None else _as_frame(eval_dataset, columns)
    scaler = TargetScaler.fit(train_frame[columns.label].to_numpy())
    tokenizer = client.tokenizer
    train_data = build_dataset(train_frame, tokenizer, scaler, columns, config.max_length)
    eval_data = None if eval_frame is None else build_dataset(eval_frame, tokenizer, scaler, columns, config.max_length)

    base = client.model.float().train()
    lora = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        modules_to_save=_head_modules(base),
    )
    model = get_peft_model(base, lora)
    has_eval = eval_data is not None
    metric = config.metric_for_best_model.replace("@", "_at_")
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear",
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="epoch" if has_eval else "no",
        save_total_limit=1 if has_eval else None,
        load_best_model_at_end=has_eval,
        metric_for_best_model=metric if has_eval else None,
        greater_is_better=(metric != "loss") if has_eval else None,
        logging_steps=config.logging_steps,
        train_sampling_strategy="group_by_length",
        use_cpu=client.device.type == "cpu",
        report_to="none",
        seed=config.seed,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        **mixed_precision_flags(client.device),
    )
    trainer = RegressionTrainer(
        model=model,
        args=args,
        train_dataset=train_data,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(
            tokenizer, pad_to_multiple_of=8 if client.device.type == "cuda" else None
        ),
        compute_metrics=_metrics_fn(eval_frame, scaler, columns) if has_eval else None,
        loss=config.loss,
        callbacks=callbacks,
    )
    started = time.perf_counter()
    train_output = trainer.train()
    elapsed = time.perf_counter() - started
    eval_metrics = trainer.evaluate() if has_eval else {}
    client.model = model.to(client.device, client.dtype).eval()
    client.scaler = scaler
    client.adapter_path = str(output_dir / "final")

    summary = _clean(
        {
            "base_model": client.base_model_name,
            "data": {
                "train": {"source": train_name, "rows": len(train_frame), "prompts": int(prompt_groups(train_frame, columns).nunique())},
                "eval": None
                if eval_frame is None
                else {"source": eval_name, "rows": len(eval_frame), "prompts": int(prompt_groups(eval_frame, columns).nunique())},
                "columns": asdict(columns),
            },
            "hyperparameters": asdict(config),
            "target_scaler": asdict(scaler),
            "metrics": {
                "train": train_output.metrics,
                "eval_best": eval_metrics,
                "best_checkpoint": trainer.state.best_model_checkpoint,
                "train_seconds": elapsed,
                "train_samples_per_second": len(train_data) * (train_output.metrics.get("epoch") or 1) / elapsed,
            },
            "environment": {
                "world_size": args.world_size,
                "device": str(client.device),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
    )
    final_dir = output_dir / "final"
    if trainer.is_world_process_zero():
        with atomic_directory(final_dir) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            scaler.save(tmp)
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    trainer.accelerator.wait_for_everyone()
    return TrainingResult(final_dir=final_dir, metrics=eval_metrics, summary=summary)
