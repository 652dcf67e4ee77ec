"""jace's configuration: the default checkpoints, and the training configs with their fields.

A config is a dataclass whose fields are made with :func:`option`: each carries its help text,
its check and its CLI flags. The command line generates its options from the fields (so a
default changed here changes ``--help``), and the checks run when a config is built, so a bad
value fails at once with every problem listed, not after an hour of training. This module
imports nothing heavy, so ``jace --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Optional

Check = Callable[[Any], bool]

#: The Japanese reranker scored with and fine-tuned by default (24 layers, MeCab tokenizer).
DEFAULT_RERANKER = "hotchpotch/japanese-reranker-cross-encoder-large-v1"
#: The vision-language model that captions image お題.
DEFAULT_CAPTION_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
#: ``jace serve``: a request body above this many bytes is a 413, answered before the body is read.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024

#: The regression metrics jace reports, by name.
REGRESSION_METRICS = ("mse", "rmse", "r2", "pearson", "spearman")
#: Name of the per-prompt ranking metric (reported as ``ndcg@K``).
RANKING_METRIC = "ndcg"
#: Metrics that can pick the best epoch: the regression metrics, the eval loss, or per-prompt ndcg@K.
BEST_MODEL_METRICS = (*REGRESSION_METRICS, "spearman_per_prompt", "loss", "ndcg@K")


def option(default: Any, help: str, check: Check | None = None, rule: str = "", flags: tuple[str, ...] = ()) -> Any:
    """A config field with help text, an optional check (``rule`` says what it wants), and CLI flag names.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     r: int = option(8, "LoRA rank.", lambda v: v >= 1, "must be >= 1", flags=("--lora-r",))
        >>> validate(C(r=0))
        Traceback (most recent call last):
        ...
        ValueError: invalid C: r must be >= 1, got 0.
    """
    metadata = {"help": help, "check": check, "rule": rule, "flags": flags}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def budget_option(saved: str) -> Any:
    """The ``budget_minutes`` field every trainer shares; ``saved`` says what is kept when the budget stops a run."""
    return option(
        None, "Stop training after this many minutes of wall-clock time; the learning-rate schedule is compressed to end "
        f"on the steps that fit (estimated at 10%, re-estimated at 30% and 60% of the budget). {saved}",
        lambda v: v is None or v > 0, "must be > 0", flags=("--budget-minutes",),
    )


def validate(config: Any, *extra: tuple[str, bool, str]) -> None:
    """Check every field of ``config`` (and ``extra`` cross-field rules: name, bad, rule); raise one ValueError listing all problems."""
    problems = []
    for field in dataclasses.fields(config):
        check = field.metadata.get("check")
        value = getattr(config, field.name)
        try:
            ok = check is None or bool(check(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            problems.append(f"{field.name} {field.metadata['rule']}, got {value!r}")
    problems += [f"{name} {rule}" for name, bad, rule in extra if bad]
    if problems:
        raise ValueError(f"invalid {type(config).__name__}: " + "; ".join(problems) + ".")


def field_help(config_class: type) -> dict[str, str]:
    """Help text per field, as the CLI shows it.

    Example:
        >>> from jace.training import LoraTrainingConfig
        >>> field_help(LoraTrainingConfig)["r"]
        'LoRA rank.'
    """
    return {field.name: field.metadata.get("help", "") for field in dataclasses.fields(config_class)}


def positive(value: Any) -> bool:
    return value > 0


def at_least_one(value: Any) -> bool:
    return value >= 1


def fraction(value: Any) -> bool:
    """In [0, 1)."""
    return 0 <= value < 1


def metric_k(metric: str) -> int | None | bool:
    """K of an ``ndcg@K`` metric, None for the other valid metrics, False for an unknown name.

    Example:
        >>> metric_k("ndcg@3"), metric_k("spearman"), metric_k("accuracy")
        (3, None, False)
    """
    if metric in REGRESSION_METRICS or metric in ("loss", "spearman_per_prompt"):
        return None
    prefix, _, k = metric.partition("@")
    if prefix == RANKING_METRIC and k.isdigit() and int(k) >= 1:
        return int(k)
    return False


@dataclass
class LoraTrainingConfig:
    """Hyperparameters for :func:`train_with_lora`. Every value is checked when the config is built.

    Example:
        >>> LoraTrainingConfig(num_train_epochs=1, loss="mse").loss
        'mse'
    """

    method: Literal["lora", "full"] = option(
        "lora", "'lora': train LoRA adapters, the head and the pooler; 'full': train every weight (see freeze_embeddings).",
        lambda v: v in ("lora", "full"), "must be 'lora' or 'full'", flags=("--method",),
    )
    r: int = option(8, "LoRA rank.", at_least_one, "must be >= 1", flags=("--lora-r",))
    lora_alpha: int = option(16, "LoRA scaling factor (alpha).", positive, "must be > 0", flags=("--lora-alpha",))
    lora_dropout: float = option(0.1, "Dropout on the LoRA branch.", fraction, "must be in [0, 1)", flags=("--lora-dropout",))
    target_modules: tuple[str, ...] = option(
        ("all-linear",), "Module names that get LoRA adapters; 'all-linear' adapts every linear layer of the encoder.",
        lambda v: len(v) > 0 and all(isinstance(m, str) and m for m in v), "must name at least one module",
    )
    train_pooler: bool = option(
        True, "Train the whole [CLS] pooler (BERT-style models) with the head under LoRA, instead of only LoRA on it; "
        "a checkpoint without a pooler starts it as the identity.", flags=("--train-pooler/--lora-pooler",),
    )
    freeze_embeddings: Optional[bool] = option(
        None, "With --method full: freeze the word-embedding matrix (most of a multilingual backbone's parameters and "
        "optimizer state); default: frozen on CPU, trained on GPU.", flags=("--freeze-embeddings/--train-embeddings",),
    )
    freeze_layers: int = option(
        0, "Freeze the embeddings and the bottom N encoder layers (with --method lora, LoRA adapts only the layers "
        "above): the backward pass stops above them, so a step costs less (a lever for CPU time budgets; measured in "
        "docs/benchmarks.md).", lambda v: v >= 0, "must be >= 0",
        flags=("--freeze-layers",),
    )
    loss: Literal["bce", "mse"] = option(
        "bce", "'bce': BCE-with-logits against scaled targets; 'mse': MSE between sigmoid(logit) and target.",
        lambda v: v in ("bce", "mse"), "must be 'bce' or 'mse'",
    )
    swap_pairs: bool = option(
        False, "Also train on every pair with its two texts swapped, for symmetric tasks such as STS (doubles an epoch; "
        "evaluation data is left as given).", flags=("--swap-pairs/--no-swap-pairs",),
    )
    learning_rate: Optional[float] = option(
        None, "Peak learning rate (AdamW, linear decay); default 3e-4 for LoRA, 5e-5 for full fine-tuning (measured: docs/benchmarks.md).",
        lambda v: v is None or v > 0, "must be > 0", flags=("--lr", "--learning-rate"),
    )
    num_train_epochs: float = option(5.0, "Training epochs.", positive, "must be > 0", flags=("--epochs",))
    per_device_train_batch_size: int = option(16, "Training batch size per process.", at_least_one, "must be >= 1", flags=("--batch-size",))
    per_device_eval_batch_size: int = option(64, "Evaluation batch size per process.", at_least_one, "must be >= 1", flags=("--eval-batch-size",))
    gradient_accumulation_steps: int = option(1, "Steps to accumulate before an update.", at_least_one, "must be >= 1")
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", positive, "must be > 0")
    weight_decay: float = option(0.01, "AdamW weight decay.", lambda v: v >= 0, "must be >= 0")
    warmup_ratio: float = option(0.06, "Fraction of steps for linear warm-up.", fraction, "must be in [0, 1)")
    max_length: int = option(512, "Truncate pairs to this many tokens (padding is dynamic).", lambda v: v >= 8, "must be >= 8")
    metric_for_best_model: str = option(
        "spearman", "Eval metric that picks the best epoch: " + ", ".join(BEST_MODEL_METRICS) + " (K >= 1).",
        lambda v: metric_k(v) is not False, f"must be one of {', '.join(BEST_MODEL_METRICS)} (K >= 1)", flags=("--metric",),
    )
    max_steps: int = option(-1, "Stop after this many steps (overrides epochs when > 0).", lambda v: v == -1 or v >= 1,
                            "must be -1 (use epochs) or >= 1")  # fmt: skip
    budget_minutes: Optional[float] = budget_option("The epoch in progress is still evaluated and saved.")
    logging_steps: int = option(50, "Log the training loss every N steps.", at_least_one, "must be >= 1")
    seed: int = option(42, "Random seed (LoRA init, shuffling, and the split when --eval is absent).")

    def __post_init__(self) -> None:
        self.target_modules = (self.target_modules,) if isinstance(self.target_modules, str) else tuple(self.target_modules)
        validate(self)

    @property
    def lr(self) -> float:
        """The learning rate in use: the one given, or the method's default."""
        return self.learning_rate if self.learning_rate is not None else (5e-5 if self.method == "full" else 3e-4)

@dataclass
class PruningTrainingConfig:
    """Hyperparameters of :func:`train_pruning_encoder`. Loss = w_rank·ranking + w_prune·token CE.

    Example:
        >>> PruningTrainingConfig(w_rank=0.05, w_prune=1.0).ranking_loss
        'bce'
    """

    w_rank: float = option(0.05, "Weight of the ranking loss (Provence: 0.05).", lambda v: v >= 0, "must be >= 0", flags=("--w-rank",))
    w_prune: float = option(1.0, "Weight of the token keep/drop cross-entropy.", lambda v: v >= 0, "must be >= 0", flags=("--w-prune",))
    ranking_loss: Literal["bce", "mse"] = option(
        "bce", "'bce': BCE of the ranking logit against labels; 'mse': MSE of the logit against the teacher's logit, logit(teacher_scores).",
        lambda v: v in ("bce", "mse"), "must be 'bce' or 'mse'",
    )
    learning_rate: float = option(5e-5, "Peak learning rate (full fine-tuning).", positive, "must be > 0", flags=("--lr", "--learning-rate"))
    num_train_epochs: float = option(1.0, "Training epochs.", positive, "must be > 0", flags=("--epochs",))
    max_steps: int = option(-1, "Stop after N steps (overrides epochs when > 0).", lambda v: v == -1 or v >= 1,
                            "must be -1 (use epochs) or >= 1")  # fmt: skip
    per_device_train_batch_size: int = option(16, "(query, text) pairs per batch.", at_least_one, "must be >= 1", flags=("--batch-size",))
    gradient_accumulation_steps: int = option(1, "Steps to accumulate before an update.", at_least_one, "must be >= 1")
    warmup_ratio: float = option(0.1, "Fraction of steps for warm-up.", fraction, "must be in [0, 1)")
    weight_decay: float = option(0.01, "AdamW weight decay.", lambda v: v >= 0, "must be >= 0")
    max_grad_norm: float = option(1.0, "Gradient clipping.", positive, "must be > 0")
    max_length: int = option(512, "Tokens per window (query + context + specials).", lambda v: v >= 16, "must be >= 16")
    max_query_tokens: int = option(64, "Query tokens kept.", at_least_one, "must be >= 1")
    freeze_embeddings: Optional[bool] = option(
        None, "Freeze the word-embedding matrix (most of a multilingual backbone's parameters and optimizer state); "
        "default: frozen on CPU, trained on GPU.", flags=("--freeze-embeddings/--train-embeddings",),
    )
    freeze_layers: int = option(
        0, "Freeze the embeddings and the bottom N encoder layers: the backward pass stops above them, so a step "
        "costs less (a lever for CPU time budgets; measured in docs/benchmarks.md).", lambda v: v >= 0, "must be >= 0",
        flags=("--freeze-layers",),
    )
    gradient_checkpointing: bool = option(
        False, "Recompute activations in the backward pass: less memory for more compute.", flags=("--gradient-checkpointing",)
    )
    budget_minutes: Optional[float] = budget_option("The epoch in progress is still evaluated and saved.")
    logging_steps: int = option(50, "Log every N steps.", at_least_one, "must be >= 1")
    seed: int = option(42, "Random seed.")

    def __post_init__(self) -> None:
        validate(self, ("w_rank + w_prune", self.w_rank + self.w_prune == 0, "must not both be 0"))


#: The losses `jace train-reranker` offers (sentence-transformers' cross-encoder losses).
RANKING_LOSSES = ("listwise", "bce", "lambda")


@dataclass
class RerankerTrainingConfig:
    """Hyperparameters of :func:`jace.reranking.train_reranker` (query, positive, negatives → a ranking cross-encoder).

    Example:
        >>> RerankerTrainingConfig(loss="lambda", num_negatives=7).loss
        'lambda'
    """

    loss: Literal["listwise", "bce", "lambda"] = option(
        "listwise", "'listwise': softmax cross-entropy of the positive against its negatives and in-batch texts "
        "(MultipleNegativesRankingLoss); "
        "'bce': each (query, text) pair on its own (BinaryCrossEntropyLoss); 'lambda': LambdaLoss (nDCG-weighted).",
        lambda v: v in RANKING_LOSSES, "must be one of " + ", ".join(RANKING_LOSSES), flags=("--loss",),
    )
    method: Literal["lora", "full"] = option(
        "full", "'full': train every weight (see freeze_embeddings); 'lora': LoRA adapters plus the head and pooler, merged at the end.",
        lambda v: v in ("lora", "full"), "must be 'lora' or 'full'", flags=("--method",),
    )
    num_negatives: int = option(3, "Negatives per query in each training list (sampled from the row's negatives).", at_least_one,
                                "must be >= 1", flags=("--num-negatives",))  # fmt: skip
    max_list_size: int = option(16, "With graded lists (--loss lambda): texts per list kept (the first N).", lambda v: v >= 2,
                                "must be >= 2", flags=("--max-list-size",))  # fmt: skip
    in_batch_negatives: int = option(1, "With the listwise loss: texts of other queries in the batch added to each list.",
                                     at_least_one, "must be >= 1", flags=("--in-batch-negatives",))  # fmt: skip
    learning_rate: Optional[float] = option(
        None, "Peak learning rate; default 5e-5 for full fine-tuning, 2e-4 for LoRA.", lambda v: v is None or v > 0, "must be > 0",
        flags=("--lr", "--learning-rate"),
    )
    num_train_epochs: float = option(1.0, "Training epochs.", positive, "must be > 0", flags=("--epochs",))
    max_steps: int = option(-1, "Stop after N steps (overrides epochs when > 0).", lambda v: v == -1 or v >= 1,
                            "must be -1 (use epochs) or >= 1")  # fmt: skip
    per_device_train_batch_size: int = option(4, "Queries per batch (each with 1 + num_negatives texts).", at_least_one,
                                              "must be >= 1", flags=("--batch-size",))  # fmt: skip
    gradient_accumulation_steps: int = option(1, "Steps to accumulate before an update.", at_least_one, "must be >= 1")
    max_length: int = option(256, "Truncate each (query, text) pair to this many tokens.", lambda v: v >= 8, "must be >= 8")
    warmup_ratio: float = option(0.1, "Fraction of steps for linear warm-up.", fraction, "must be in [0, 1)")
    weight_decay: float = option(0.01, "AdamW weight decay.", lambda v: v >= 0, "must be >= 0")
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", positive, "must be > 0")
    r: int = option(16, "LoRA rank (with --method lora).", at_least_one, "must be >= 1", flags=("--lora-r",))
    lora_alpha: int = option(32, "LoRA scaling factor (with --method lora).", positive, "must be > 0", flags=("--lora-alpha",))
    freeze_embeddings: Optional[bool] = option(
        None, "With --method full: freeze the word-embedding matrix; default: frozen on CPU, trained on GPU.",
        flags=("--freeze-embeddings/--train-embeddings",),
    )
    freeze_layers: int = option(
        0, "Freeze the embeddings and the bottom N encoder layers (with --method lora, LoRA adapts only the layers "
        "above): the backward pass stops above them, so a step costs less (a lever for CPU time budgets; measured in "
        "docs/benchmarks.md).", lambda v: v >= 0, "must be >= 0",
        flags=("--freeze-layers",),
    )
    budget_minutes: Optional[float] = budget_option("The model so far is saved.")
    logging_steps: int = option(50, "Log the training loss every N steps.", at_least_one, "must be >= 1")
    seed: int = option(42, "Random seed (negative sampling, shuffling, LoRA init).")

    def __post_init__(self) -> None:
        validate(self)

    @property
    def lr(self) -> float:
        """The learning rate in use: the one given, or the method's default."""
        return self.learning_rate if self.learning_rate is not None else (5e-5 if self.method == "full" else 2e-4)
