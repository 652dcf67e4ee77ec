"""jace: Japanese cross-encoders.

Score pairs with a reranker, LoRA-fine-tune it into a regression model, caption image お題 with
Qwen2.5-VL, and prune context by query with a PruningEncoder.

Example:
    >>> from jace import RerankerCrossEncoderClient
    >>> client = RerankerCrossEncoderClient()  # doctest: +SKIP
    >>> client.run([("お題", "回答")])  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "RerankerCrossEncoderClient": "jace.scoring",
    "DEFAULT_MODEL": "jace.scoring",
    "LoraTrainingConfig": "jace.training",
    "TrainingResult": "jace.training",
    "train_with_lora": "jace.training",
    "export_merged_model": "jace.export",
    "TargetScaler": "jace.scaling",
    "load_humor": "jace.data",
    "load_pairs": "jace.data",
    "grouped_split": "jace.data",
    "PairColumns": "jace.data",
    "DataValidationError": "jace.data",
    "evaluate_predictions": "jace.metrics",
    "QwenCaptionClient": "jace.caption",
    "PruningEncoder": "jace.pruning",
    "RerankerTrainingConfig": "jace.config",
    "train_reranker": "jace.reranking",
    "evaluate_reranker": "jace.reranking",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from jace.caption import QwenCaptionClient as QwenCaptionClient
    from jace.config import RerankerTrainingConfig as RerankerTrainingConfig
    from jace.data import (
        DataValidationError as DataValidationError,
        PairColumns as PairColumns,
        grouped_split as grouped_split,
        load_humor as load_humor,
        load_pairs as load_pairs,
    )
    from jace.export import export_merged_model as export_merged_model
    from jace.metrics import evaluate_predictions as evaluate_predictions
    from jace.pruning import PruningEncoder as PruningEncoder
    from jace.reranking import (
        evaluate_reranker as evaluate_reranker,
        train_reranker as train_reranker,
    )
    from jace.scaling import TargetScaler as TargetScaler
    from jace.scoring import (
        DEFAULT_MODEL as DEFAULT_MODEL,
        RerankerCrossEncoderClient as RerankerCrossEncoderClient,
    )
    from jace.training import (
        LoraTrainingConfig as LoraTrainingConfig,
        TrainingResult as TrainingResult,
        train_with_lora as train_with_lora,
    )


def __getattr__(name: str) -> Any:
    # Imports are lazy so that `jace --help` and light modules do not pay for torch/transformers.
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jace' has no attribute {name!r}")
