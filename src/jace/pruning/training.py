"""Training a PruningEncoder: token cross-entropy for pruning plus a weighted ranking loss (Provence-style)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import TrainerCallback, TrainingArguments

from jace.config import PruningTrainingConfig
from jace.pruning.encoder import PruningEncoder
from jace.pruning.inputs import IGNORE, PairTemplate, collate, encode_windows
from jace.trainer import (
    LengthGroupedTrainer, common_arguments, freeze_bottom_layers, freeze_embeddings, run_training, with_budget,
)  # fmt: skip


@dataclass(frozen=True)
class PairExample:
    """One (query, text) training example, or one window of it when the text is longer than a window."""

    query: str
    text: str
    label: float
    spans: list
    relevance: list
    teacher: float | None
    window: int = 0
    ranking_weight: float = 1.0  # 0 for a window of a positive passage that holds none of its relevant sentences
    length: int = 0


class PairDataset(Dataset):
    """Flattens query rows into (query, text) examples with sentence relevance and labels.

    Given a tokenizer, a text longer than one window becomes one example per window, so every
    sentence is trained on (inference windows and merges the same way). A window of a positive
    passage that holds none of its relevant sentences still trains the pruning head, but not the
    ranking head: that window alone does not answer the query.
    """

    def __init__(self, rows: list[dict[str, Any]], tokenizer: Any = None, max_length: int = 512,
                 max_query_tokens: int = 64) -> None:  # fmt: skip
        template = PairTemplate.probe(tokenizer) if tokenizer is not None else None
        self.examples: list[PairExample] = []
        for row in rows:
            teachers = row.get("teacher_scores") or [None] * len(row["texts"])
            for text, label, spans, relevance, teacher in zip(
                row["texts"], row["labels"], row["context_spans"], row["context_spans_relevance"], teachers
            ):
                base = PairExample(row["query"], text, float(label), spans, relevance, teacher, length=len(row["query"]) + len(text))
                if template is None:
                    self.examples.append(base)
                    continue
                windows = encode_windows(tokenizer, template, row["query"], text, spans, max_length, max_query_tokens)
                for index, window in enumerate(windows):
                    answers_here = any(relevance[i] for i in window.sentences)
                    weight = 1.0 if (not label or len(windows) == 1 or answers_here) else 0.0
                    self.examples.append(replace(base, window=index, ranking_weight=weight, length=len(window.input_ids)))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> PairExample:
        return self.examples[index]

    @property
    def lengths(self) -> list[int]:
        """Token length of each window (characters of query + text without a tokenizer), for length-grouped batches."""
        return [example.length for example in self.examples]


class PruningCollator:
    """Builds model inputs and token labels from character spans, for any tokenizer."""

    def __init__(self, tokenizer: Any, max_length: int, max_query_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.template = PairTemplate.probe(tokenizer)
        self.max_length = max_length
        self.max_query_tokens = max_query_tokens

    def __call__(self, examples: list[PairExample]) -> dict[str, torch.Tensor]:
        windows = [
            encode_windows(self.tokenizer, self.template, e.query, e.text, e.spans, self.max_length, self.max_query_tokens,
                           first_window_only=e.window == 0)[e.window]
            for e in examples
        ]  # fmt: skip
        batch = collate(windows, self.tokenizer.pad_token_id or 0)
        sentence_ids = batch.pop("sentence_ids")
        token_labels = torch.full_like(sentence_ids, IGNORE)
        for row, example in enumerate(examples):
            mask = sentence_ids[row] >= 0
            token_labels[row, mask] = torch.tensor(example.relevance, dtype=torch.long)[sentence_ids[row, mask]]
        batch["token_labels"] = token_labels
        batch["ranking_labels"] = torch.tensor([e.label for e in examples], dtype=torch.float)
        batch["ranking_weights"] = torch.tensor([e.ranking_weight for e in examples], dtype=torch.float)
        if all(e.teacher is not None for e in examples):
            batch["teacher_scores"] = torch.tensor([e.teacher for e in examples], dtype=torch.float)
        return batch


#: Teacher scores are clamped to [eps, 1 - eps] before their logit (|logit| <= 13.8).
TEACHER_EPS = 1e-6


class PruningTrainer(LengthGroupedTrainer):
    """loss = w_rank × ranking loss (BCE vs labels, or MSE of the logit vs the teacher's logit) + w_prune × token CE.

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
        weights = inputs.pop("ranking_weights", None)
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
                # In logit space: the teacher's 0-1 scores mapped back to its logits. Inference applies
                # the same sigmoid to both, so equal logits mean equal scores; unlike MSE on the sigmoid,
                # the gradient does not vanish where the sigmoid is flat (a reranker's scores often sit
                # in a narrow band: 0.10-0.89 for jace's e5 reranker on JSQuAD).
                target = torch.logit(teacher.clamp(TEACHER_EPS, 1.0 - TEACHER_EPS))
                per_example = (logits - target) ** 2
            else:
                per_example = torch.nn.functional.binary_cross_entropy_with_logits(logits, ranking_labels, reduction="none")
            weights = torch.ones_like(per_example) if weights is None else weights
            rank_loss = (per_example * weights).sum() / weights.sum().clamp(min=1.0)
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
    if encoder.quantized:
        raise ValueError("an int8 PruningEncoder cannot be trained; load it without dtype='int8' to train it.")
    config = config or PruningTrainingConfig()
    output_dir = Path(output_dir)
    model = encoder.model.float().train()
    backbone = model.backbone_model
    freeze = freeze_embeddings(backbone, config.freeze_embeddings, encoder.device)
    frozen_layers = freeze_bottom_layers(backbone, config.freeze_layers)
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing: exact gradients, and it works with frozen (grad-free) embeddings.
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    args = TrainingArguments(**common_arguments(config, output_dir, encoder.device), save_strategy="no", remove_unused_columns=False)
    trainer = PruningTrainer(
        model=model, args=args, train_dataset=PairDataset(train_rows, encoder.tokenizer, config.max_length, config.max_query_tokens),
        data_collator=PruningCollator(encoder.tokenizer, config.max_length, config.max_query_tokens),
        pruning_config=config, callbacks=with_budget(callbacks, config.budget_minutes),
    )  # fmt: skip
    try:
        output = run_training(trainer)
    finally:
        backbone.get_input_embeddings().weight.requires_grad_(True)
        for parameter in frozen_layers:
            parameter.requires_grad_(True)
        if config.gradient_checkpointing:
            backbone.activation_checkpointing_disable()
    encoder.model = model.eval()
    encoder.metadata.update(
        {
            "training_data": training_data or f"{len(train_rows)} query rows",
            "training": {**asdict(config), "freeze_embeddings": freeze},
            "train_metrics": {k: v for k, v in output.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)},
        }
    )
    final = output_dir / "final"
    if trainer.is_world_process_zero():
        encoder.save_pretrained(final, overwrite=True)
    trainer.accelerator.wait_for_everyone()
    return final
