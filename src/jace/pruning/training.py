"""Training a PruningEncoder: token cross-entropy for pruning plus a weighted ranking loss (Provence-style)."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import TrainerCallback, TrainingArguments

from jace.config import PruningTrainingConfig
from jace.device import mixed_precision_flags
from jace.pruning.encoder import PruningEncoder
from jace.pruning.inputs import IGNORE, PairTemplate, collate, encode_windows
from jace.trainer import LengthGroupedTrainer


class PairDataset(Dataset):
    """Flattens query rows into (query, text) examples with sentence relevance and labels."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.examples = []
        for row in rows:
            teachers = row.get("teacher_scores") or [None] * len(row["texts"])
            for text, label, spans, relevance, teacher in zip(
                row["texts"], row["labels"], row["context_spans"], row["context_spans_relevance"], teachers
            ):
                self.examples.append((row["query"], text, float(label), spans, relevance, teacher))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int):
        return self.examples[index]

    @property
    def lengths(self) -> list[int]:
        """Character length of query + text: a cheap proxy for token length, for length-grouped batches."""
        return [len(query) + len(text) for query, text, *_ in self.examples]


class PruningCollator:
    """Builds model inputs and token labels from character spans, for any tokenizer (no offsets needed)."""

    def __init__(self, tokenizer: Any, max_length: int, max_query_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.template = PairTemplate.probe(tokenizer)
        self.max_length = max_length
        self.max_query_tokens = max_query_tokens

    def __call__(self, examples) -> dict[str, torch.Tensor]:
        windows, relevances = [], []
        for query, text, _, spans, relevance, _ in examples:
            windows.append(encode_windows(self.tokenizer, self.template, query, text, spans, self.max_length,
                                          self.max_query_tokens, first_window_only=True)[0])  # fmt: skip
            relevances.append(relevance)
        batch = collate(windows, self.tokenizer.pad_token_id or 0)
        sentence_ids = batch.pop("sentence_ids")
        token_labels = torch.full_like(sentence_ids, IGNORE)
        for row, relevance in enumerate(relevances):
            mask = sentence_ids[row] >= 0
            token_labels[row, mask] = torch.tensor(relevance, dtype=torch.long)[sentence_ids[row, mask]]
        batch["token_labels"] = token_labels
        batch["ranking_labels"] = torch.tensor([e[2] for e in examples], dtype=torch.float)
        teachers = [e[5] for e in examples]
        if all(t is not None for t in teachers):
            batch["teacher_scores"] = torch.tensor(teachers, dtype=torch.float)
        return batch


class PruningTrainer(LengthGroupedTrainer):
    """loss = w_rank × ranking loss (BCE vs labels, or MSE vs teacher scores) + w_prune × token CE.

    The token cross-entropy is averaged over each passage's context tokens, then over the passages
    of the batch, so every term is a per-example mean and gradient accumulation is exact.
    """

    def __init__(self, *args: Any, pruning_config: PruningTrainingConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pruning_config = pruning_config

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        cfg = self.pruning_config
        token_labels = inputs.pop("token_labels")
        ranking_labels = inputs.pop("ranking_labels")
        teacher = inputs.pop("teacher_scores", None)
        outputs = model(**inputs)
        per_token = torch.nn.functional.cross_entropy(
            outputs.pruning_logits.float().transpose(1, 2), token_labels, ignore_index=IGNORE, reduction="none"
        )
        counts = (token_labels != IGNORE).sum(dim=1)
        prune_loss = (per_token.sum(dim=1)[counts > 0] / counts[counts > 0]).mean()
        loss = cfg.w_prune * prune_loss
        if outputs.ranking_logits is not None and cfg.w_rank > 0:
            logits = outputs.ranking_logits.float().squeeze(-1)
            if cfg.ranking_loss == "mse":
                if teacher is None:
                    raise ValueError("ranking_loss='mse' needs teacher_scores in every row of the training data.")
                # On the sigmoid, as inference scores: teacher scores are the teacher's 0-1 scores.
                rank_loss = torch.nn.functional.mse_loss(torch.sigmoid(logits), teacher)
            else:
                rank_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, ranking_labels)
            loss = loss + cfg.w_rank * rank_loss
        return (loss, outputs) if return_outputs else loss


def train_pruning_encoder(
    encoder: PruningEncoder,
    train_rows: list[dict[str, Any]],
    output_dir: str | Path,
    *,
    config: PruningTrainingConfig | None = None,
    callbacks: list[TrainerCallback] | None = None,
    training_data: str | None = None,
) -> Path:
    """Fine-tune ``encoder`` (backbone and pruning head) and save it to ``output_dir/final``."""
    config = config or PruningTrainingConfig()
    output_dir = Path(output_dir)
    model = encoder.model.float().train()
    args = TrainingArguments(
        output_dir=str(output_dir / "checkpoints"), learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size, warmup_steps=config.warmup_ratio,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm, logging_steps=config.logging_steps,
        save_strategy="no", report_to="none", seed=config.seed, remove_unused_columns=False,
        use_cpu=encoder.device.type == "cpu", dataloader_num_workers=0, **mixed_precision_flags(encoder.device),
    )  # fmt: skip
    trainer = PruningTrainer(
        model=model, args=args, train_dataset=PairDataset(train_rows),
        data_collator=PruningCollator(encoder.tokenizer, config.max_length, config.max_query_tokens),
        pruning_config=config, callbacks=callbacks,
    )  # fmt: skip
    output = trainer.train()
    encoder.model = model.eval()
    encoder.metadata.update(
        {
            "training_data": training_data or f"{len(train_rows)} query rows",
            "training": {k: v for k, v in asdict(config).items()},
            "train_metrics": {k: v for k, v in output.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)},
        }
    )
    final = output_dir / "final"
    if trainer.is_world_process_zero():
        encoder.save_pretrained(final, overwrite=True)
    trainer.accelerator.wait_for_everyone()
    return final
