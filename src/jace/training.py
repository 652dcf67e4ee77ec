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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from scipy.special import expit
from transformers import DataCollatorWithPadding, EvalPrediction, PreTrainedModel, TrainerCallback, TrainingArguments, set_seed

from jace.atomic import atomic_directory
from jace.config import LoraTrainingConfig, metric_k
from jace.cross_encoder import encode_pairs, portable_base_name
from jace.data import HUMOR, PairColumns, load_pairs, prompt_groups
from jace.metrics import evaluate_predictions
from jace.scaling import TargetScaler
from jace.trainer import (
    LengthGroupedTrainer,
    check_freeze_layers,
    common_arguments,
    freeze_bottom_layers,
    freeze_embeddings,
    run_training,
    with_budget,
)

SUMMARY_FILE = "training_summary.json"
HEAD_MODULES = ("classifier", "score")
POOLER = "pooler"
TRAINING_KS = (5, 10)


@dataclass
class TrainingResult:
    """Where the trained adapter went, the metrics of its best epoch, and what the client needs to use it."""

    final_dir: Path
    metrics: dict[str, Any]
    summary: dict[str, Any]
    model: Any = field(default=None, repr=False)
    scaler: TargetScaler | None = None


class RegressionTrainer(LengthGroupedTrainer):
    """A Trainer whose loss matches inference: BCE-with-logits, or MSE after the sigmoid (mean over the batch)."""

    def __init__(self, *args: Any, loss: str = "bce", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_name = loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        labels = inputs.pop("labels")
        inputs.pop(ROW_INDEX, None)
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


ROW_INDEX = "row_index"


def swapped_pairs(frame: pd.DataFrame, columns: PairColumns) -> pd.DataFrame:
    """``frame`` followed by every row again with its two texts swapped (symmetric tasks such as STS).

    Example:
        >>> f = pd.DataFrame({"odai": ["a"], "response": ["b"], "score": [1.0]})
        >>> swapped_pairs(f, HUMOR)[["odai", "response"]].values.tolist()
        [['a', 'b'], ['b', 'a']]
    """
    swapped = frame.rename(columns={columns.first: columns.second, columns.second: columns.first})
    return pd.concat([frame, swapped[frame.columns]], ignore_index=True)


def build_dataset(
    frame: pd.DataFrame, tokenizer: Any, scaler: TargetScaler, columns: PairColumns, max_length: int
) -> Dataset:
    """Tokenize pairs (no padding); attach scaled labels and each row's index in ``frame``.

    The row index travels with every prediction (as a second label), so metrics pair each
    prediction with its own row whatever order evaluation returns them in.
    """
    encoded = encode_pairs(tokenizer, list(zip(frame[columns.first], frame[columns.second])), max_length)
    encoded["labels"] = scaler.transform(frame[columns.label].to_numpy()).astype(np.float32).tolist()
    encoded[ROW_INDEX] = list(range(len(frame)))
    return Dataset.from_dict(encoded)


def _metrics_fn(frame: pd.DataFrame, scaler: TargetScaler, columns: PairColumns, ks: tuple[int, ...]):
    groups = prompt_groups(frame, columns).to_numpy()
    truth = frame[columns.label].to_numpy(dtype=float)

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        _, rows = prediction.label_ids
        rows = np.asarray(rows).reshape(-1).astype(int)
        logits = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1)
        # Distributed evaluation may pad with repeated rows; keep each row once, in row order.
        rows, first = np.unique(rows, return_index=True)
        if len(rows) != len(frame):
            raise RuntimeError(f"evaluation returned predictions for {len(rows)} of {len(frame)} rows.")
        predicted = scaler.inverse_transform(expit(logits[first]))
        overall = evaluate_predictions(truth[rows], predicted, groups[rows].tolist(), None, ks=ks)["overall"]
        # None (e.g. constant predictions) becomes NaN, which never wins "best model".
        return {
            k.replace("@", "_at_"): (math.nan if v is None else float(v))
            for k, v in overall.items()
            if (v is None or isinstance(v, float)) and "global" not in k
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


def _check_adapted_layers(model: Any, targets: tuple[str, ...]) -> None:
    """Raise when LoRA landed on no layer of the encoder (e.g. only on the head): it would never be adapted."""
    base = model.get_base_model()
    encoder = getattr(base, base.base_model_prefix, None)
    if encoder is None:
        return
    adapted = [name for name, module in encoder.named_modules() if hasattr(module, "lora_A")]
    if not adapted:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in encoder.named_modules() if isinstance(module, torch.nn.Linear)})
        raise ValueError(
            f"target_modules {list(targets)} match no layer of the encoder ({type(base).__name__}.{base.base_model_prefix}), "
            f"so LoRA would never adapt it. Use 'all-linear' (the default) or names of its linear layers: {linear}."
        )


def _restore(model: PreTrainedModel, peft_model: Any, dtype: torch.dtype, training: bool, saved: dict | None) -> None:
    """Undo what training did to the caller's model: LoRA layers out (or full weights back), dtype and mode back."""
    if peft_model is not None and peft_model is not model:
        peft_model.unload()
    if saved is not None:
        model.load_state_dict(saved)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.to(dtype)
    model.train(training)


def trainable_model(model: PreTrainedModel, config: Any, device: torch.device) -> Any:
    """The model a Trainer updates: a PEFT LoRA model (head, and pooler unless ``train_pooler=False``, trained
    in full) for ``config.method == "lora"``, else ``model`` itself with its word embeddings frozen or not; the
    embeddings and bottom ``config.freeze_layers`` encoder layers are frozen (LoRA: left without adapters).

    ``config`` is a :class:`LoraTrainingConfig` or a :class:`jace.config.RerankerTrainingConfig`.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    if config.method == "full":
        freeze_embeddings(model, config.freeze_embeddings, device)
        freeze_bottom_layers(model, config.freeze_layers)
        return model
    targets = tuple(getattr(config, "target_modules", ("all-linear",)))
    has_pooler = any(name.split(".")[-1] == POOLER for name, _ in model.named_modules())
    target_modules: str | list[str] = targets[0] if targets == ("all-linear",) else list(targets)
    above = {}
    if config.freeze_layers:  # LoRA on the layers above the frozen ones only (the embeddings are frozen under LoRA anyway)
        layers = check_freeze_layers(model, config.freeze_layers)
        above = {"layers_to_transform": list(range(config.freeze_layers, len(layers)))}
        if target_modules == "all-linear":  # PEFT takes layers_to_transform with a list of names only
            target_modules = sorted({name.rsplit(".", 1)[-1] for name, m in layers.named_modules() if isinstance(m, torch.nn.Linear)})
    lora = LoraConfig(
        **above,
        task_type=TaskType.SEQ_CLS,
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=getattr(config, "lora_dropout", 0.1),
        target_modules=target_modules,
        modules_to_save=_head_modules(model) + ([POOLER] if getattr(config, "train_pooler", True) and has_pooler else []),
    )
    peft_model = get_peft_model(model, lora)
    _check_adapted_layers(peft_model, targets)
    return peft_model


def train_with_lora(
    model: PreTrainedModel,
    tokenizer: Any,
    train_dataset: Any,
    eval_dataset: Any = None,
    output_dir: str | Path = "runs/reranker-lora",
    *,
    config: LoraTrainingConfig | None = None,
    columns: PairColumns = HUMOR,
    callbacks: list[TrainerCallback] | None = None,
    base_model_name: str | None = None,
) -> TrainingResult:
    """Fine-tune a single-logit ``model`` with LoRA; write ``output_dir/final`` (adapter, head, tokenizer, scaler, summary).

    With ``config.method="full"`` every weight is trained instead (the word embeddings stay frozen
    on CPU unless ``freeze_embeddings=False``) and ``final`` is a standalone model folder.

    Datasets may be DataFrames, ``datasets.Dataset`` objects or file paths with the columns named
    by ``columns`` (humor: ``odai``, ``response``, ``score``). ``callbacks`` are passed to the
    ``Trainer`` (e.g. early stopping or a time budget). Evaluation runs every epoch and
    the best epoch (``config.metric_for_best_model``) is the one saved. Runs unchanged under
    ``torchrun``/``accelerate launch`` (DDP); only the main process writes ``final``.

    LoRA layers are injected into ``model`` in place; the returned ``TrainingResult.model`` is the
    trained PEFT model. If training fails, ``model`` is restored (LoRA removed, dtype and mode back).
    Most users call :meth:`jace.RerankerCrossEncoderClient.train_with_lora`, which updates the client.

    Example:
        >>> result = train_with_lora(model, tokenizer, "train.csv", "valid.csv", "runs/humor")  # doctest: +SKIP
        >>> result.final_dir  # doctest: +SKIP
        PosixPath('runs/humor/final')
    """
    config = config or LoraTrainingConfig()
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output_dir {output_dir} is a file; pass a folder for the run (checkpoints and final/).")
    train_frame, train_name = _as_frame(train_dataset, columns)
    eval_frame, eval_name = (None, None) if eval_dataset is None else _as_frame(eval_dataset, columns)
    scaler = TargetScaler.fit(train_frame[columns.label].to_numpy())
    training_pairs = swapped_pairs(train_frame, columns) if config.swap_pairs else train_frame
    train_data = build_dataset(training_pairs, tokenizer, scaler, columns, config.max_length)
    eval_data = None if eval_frame is None else build_dataset(eval_frame, tokenizer, scaler, columns, config.max_length)
    device = next(model.parameters()).device
    dtype, was_training = next(model.parameters()).dtype, model.training
    _head_modules(model)  # fail before training when the model has no classification head
    ks = tuple(sorted({*TRAINING_KS, *([metric_k(config.metric_for_best_model)] if metric_k(config.metric_for_best_model) else [])}))

    peft_model = None
    saved = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()} if config.method == "full" else None
    try:
        set_seed(config.seed)  # LoRA's random init follows the seed too, so a run is reproducible
        peft_model = trainable_model(model.float().train(), config, device)
        has_eval = eval_data is not None
        metric = config.metric_for_best_model.replace("@", "_at_")
        args = TrainingArguments(
            **common_arguments(config, output_dir, device),
            per_device_eval_batch_size=config.per_device_eval_batch_size,
            lr_scheduler_type="linear",
            eval_strategy="epoch" if has_eval else "no",
            save_strategy="epoch" if has_eval else "no",
            save_total_limit=1 if has_eval else None,
            load_best_model_at_end=has_eval,
            metric_for_best_model=metric if has_eval else None,
            greater_is_better=(metric not in ("loss", "mse", "rmse")) if has_eval else None,
            label_names=["labels", ROW_INDEX],
            ddp_find_unused_parameters=False,
        )
        trainer = RegressionTrainer(
            model=peft_model,
            args=args,
            train_dataset=train_data,
            eval_dataset=eval_data,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if device.type == "cuda" else None),
            compute_metrics=_metrics_fn(eval_frame, scaler, columns, ks) if has_eval else None,
            loss=config.loss,
            callbacks=with_budget(callbacks, config.budget_minutes),
        )
        started = time.perf_counter()
        train_output = run_training(trainer)
        elapsed = time.perf_counter() - started
        eval_metrics = trainer.evaluate() if has_eval else {}
    except BaseException:
        _restore(model, peft_model, dtype, was_training, saved)
        raise
    peft_model.eval()
    if config.method == "full":
        model.requires_grad_(True)  # as loaded: undo the frozen embeddings and layers
    # LoRA: PEFT's convention stays (base weights frozen, adapters and saved modules trainable)

    base_model = portable_base_name(base_model_name or getattr(model, "name_or_path", "")) or None
    if config.method == "lora" and base_model:
        for adapter in peft_model.peft_config.values():  # recorded in adapter_config.json, read back when loading
            adapter.base_model_name_or_path = base_model
    summary = _clean(
        {
            "base_model": base_model,
            "data": {
                "train": {"source": train_name, "rows": len(train_frame), "prompts": int(prompt_groups(train_frame, columns).nunique())},
                "eval": None
                if eval_frame is None
                else {"source": eval_name, "rows": len(eval_frame), "prompts": int(prompt_groups(eval_frame, columns).nunique())},
                "columns": asdict(columns),
            },
            "hyperparameters": {**asdict(config), "learning_rate": config.lr},
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
                "device": str(device),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
    )
    final_dir = output_dir / "final"
    if trainer.is_world_process_zero():
        with atomic_directory(final_dir, overwrite=True) as tmp:
            if config.method == "full":
                from jace.export import SIGMOID

                peft_model.config.sentence_transformers = {"activation_fn": SIGMOID}
            peft_model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            scaler.save(tmp)
            (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    trainer.accelerator.wait_for_everyone()
    return TrainingResult(final_dir=final_dir, metrics=eval_metrics, summary=summary, model=peft_model, scaler=scaler)
