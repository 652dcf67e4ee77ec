"""Request and response bodies of ``jace serve``: TEI's ``/rerank``, the Cohere/Jina/infinity
``/v1/rerank``, and jace's ``/score`` and ``/prune``. A bad field is a 422 that names it."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Text = Annotated[str, StringConstraints(min_length=1, pattern=r"\S")]  # at least one non-space character


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RerankRequest(_Strict):
    """TEI ``POST /rerank``."""

    query: Text
    texts: list[Text] = Field(min_length=1)
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False
    truncation_direction: Literal["right", "left"] = "right"


class RerankHit(BaseModel):
    index: int
    score: float
    text: Optional[str] = None


class Document(_Strict):
    text: Text


class CohereRerankRequest(_Strict):
    """Cohere / Jina / infinity ``POST /v1/rerank``."""

    model: Optional[str] = None
    query: Text
    documents: list[Union[Text, Document]] = Field(min_length=1)
    top_n: Optional[int] = Field(default=None, ge=1)
    return_documents: bool = False


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: Optional[Document] = None


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereResult]
    meta: dict


class ScoreRequest(_Strict):
    """jace ``POST /score``: pairs such as (お題, 回答), scored by a model trained by jace."""

    pairs: list[tuple[Text, Text]] = Field(min_length=1)
    original_scale: bool = False


class ScoreResponse(BaseModel):
    scores: list[float]


class PruneRequest(_Strict):
    """jace ``POST /prune``: keep the sentences of each context that matter to the query."""

    query: Text
    contexts: list[Text] = Field(min_length=1)
    # None: the pruner's saved default threshold (``jace evaluate-pruner --save-threshold``).
    threshold: Optional[float] = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    # None: the pruner's saved setting. True: the top-ranked context keeps at least its best sentence.
    keep_top_context: Optional[bool] = None


class PrunedContext(BaseModel):
    pruned_context: str
    kept_sentences: list[int]
    sentence_spans: list[tuple[int, int]]
    sentence_probabilities: list[float]
    reranking_score: Optional[float]
    compression_rate: float


class PruneResponse(BaseModel):
    results: list[PrunedContext]
