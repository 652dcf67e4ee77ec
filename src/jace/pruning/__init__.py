"""PruningEncoder: query-dependent context pruning and reranking in one forward pass.

Importing this package registers the model classes with the transformers Auto API, so a saved
folder also loads without ``trust_remote_code``.

Example:
    >>> from jace.pruning import PruningEncoder
    >>> encoder = PruningEncoder.from_pretrained("path/to/pruning_model")  # doctest: +SKIP
    >>> encoder.prune("梅雨がないのは？", "梅雨は東アジアの気象です。北海道には梅雨がない。").pruned_context  # doctest: +SKIP
    '北海道には梅雨がない。'
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

from jace.pruning.modeling_pruning_encoder import (
    PruningEncoderConfig,
    PruningEncoderForSequenceClassification,
    PruningEncoderForTokenClassification,
    PruningEncoderModel,
    PruningEncoderOutput,
)

AutoConfig.register("pruning_encoder", PruningEncoderConfig, exist_ok=True)
AutoModel.register(PruningEncoderConfig, PruningEncoderModel, exist_ok=True)
AutoModelForSequenceClassification.register(PruningEncoderConfig, PruningEncoderForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(PruningEncoderConfig, PruningEncoderForTokenClassification, exist_ok=True)

from jace.pruning.encoder import PruningEncoder, PruningResult  # noqa: E402
from jace.pruning.sentences import split_sentences  # noqa: E402

__all__ = [
    "PruningEncoder",
    "PruningResult",
    "PruningEncoderConfig",
    "PruningEncoderModel",
    "PruningEncoderForSequenceClassification",
    "PruningEncoderForTokenClassification",
    "PruningEncoderOutput",
    "split_sentences",
]
