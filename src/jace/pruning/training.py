"""Training a PruningEncoder: token cross-entropy for pruning plus a weighted ranking loss (Provence-style)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from jace.device import mixed_precision_flags
from jace.pruning.encoder import PruningEncoder
from jace.pruning.inputs import IGNORE, PairTemplate, collate, encode_windows


@dataclass
class PruningTrainingConfig:
    """Hyperparameters of :func:`train_pruning_encoder`. Loss = w_rank·ranking + w_prune·token CE.

    Example:
        >>> PruningTrainingConfig(w_rank=0.05, w_prune=1.0).ranking_loss
        'bce'
    """

    w_rank: float = field(default=0.05, metadata={"help": "Weight of the ranking loss (Provence: 0.05)."})
    w_prune: float = field(default=1.0, metadata={"help": "Weight of the token keep/drop cross-entropy."})
    ranking_loss: Literal["bce", "mse"] = field(
        default="bce", metadata={"help": "'bce' against labels, or 'mse' of the ranking logit against teacher_scores."}
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (full fine-tuning)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Training epochs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after N steps (overrides epochs when > 0)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "(query, text) pairs per batch."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps for warm-up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping."})
    max_length: int = field(default=512, metadata={"help": "Tokens per window (query + context + specials)."})
    max_query_tokens: int = field(default=64, metadata={"help": "Query tokens kept."})
    logging_steps: int = field(default=50, metadata={"help": "Log every N steps."})
    seed: int = field(default=42, metadata={"help": "Random seed."})

    def __post_init__(self) -> None:
        if self.ranking_loss not in ("bce", "mse"):
            raise ValueError(f"ranking_loss must be 'bce' or 'mse', got {self.ranking_loss!r}.")
        if self.w_rank < 0 or self.w_prune < 0 or self.w_rank + self.w_prune == 0:
            raise ValueError("w_rank and w_prune must be >= 0 and not both 0.")


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


class PruningTrainer(Trainer):
    """loss = w_rank × ranking loss (BCE vs labels, or MSE vs teacher scores) + w_prune × token CE."""

    def __init__(self, *args: Any, pruning_config: PruningTrainingConfig, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pruning_config = pruning_config

    def _get_train_sampler(self, train_dataset=None):
        # Group pairs of similar length into batches (randomly shuffled groups), so that batches of
        # long JSQuAD-style passages are not padded around short ones.
        from transformers.trainer_pt_utils import LengthGroupedSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        generator = torch.Generator().manual_seed(self.args.seed)
        return LengthGroupedSampler(self.args.train_batch_size, lengths=dataset.lengths, generator=generator)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D102
        cfg = self.pruning_config
        token_labels = inputs.pop("token_labels")
        ranking_labels = inputs.pop("ranking_labels")
        teacher = inputs.pop("teacher_scores", None)
        outputs = model(**inputs)
        prune_loss = torch.nn.functional.cross_entropy(
            outputs.pruning_logits.float().view(-1, 2), token_labels.view(-1), ignore_index=IGNORE
        )
        loss = cfg.w_prune * prune_loss
        if outputs.ranking_logits is not None and cfg.w_rank > 0:
            logits = outputs.ranking_logits.float().squeeze(-1)
            if cfg.ranking_loss == "mse":
                if teacher is None:
                    raise ValueError("ranking_loss='mse' needs teacher_scores in every row of the training data.")
                rank_loss = torch.nn.functional.mse_loss(logits, teacher)
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
