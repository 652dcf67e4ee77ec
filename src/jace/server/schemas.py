"""Request and response bodies of ``jace serve``: TEI's ``/rerank``, Cohere's ``/v1/rerank`` and
``/v2/rerank`` (also Jina and infinity), and jace's ``/score`` and ``/prune``. A bad field is a 422
that names it; booleans are strict (``0`` is not ``false``) and no string holds a lone surrogate."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StringConstraints


def _encodable(text: str) -> str:
    """Refuse strings that cannot be UTF-8 (a lone UTF-16 surrogate such as ``"\\ud800"`` in the JSON)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"the text holds a lone UTF-16 surrogate at character {error.start}; send valid Unicode") from None
    return text


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number; send a number")
    return value


#: Python's whitespace (``str.isspace``), spelled out so that every regex dialect (the server's, the
#: schema's readers, a fuzzer's) reads the pattern alike: a text needs one character outside it.
_SPACE = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
String = Annotated[str, AfterValidator(_encodable)]
Text = Annotated[str, StringConstraints(min_length=1, pattern=f"[^{_SPACE}]"), AfterValidator(_encodable)]  # not blank
Count = Annotated[int, Field(ge=1), BeforeValidator(_not_bool)]
Priority = Annotated[int, Field(ge=0), BeforeValidator(_not_bool)]
Threshold = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False), BeforeValidator(_not_bool)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RerankRequest(_Strict):
    """TEI ``POST /rerank``."""

    query: Text
    texts: list[Text] = Field(min_length=1)
    raw_scores: StrictBool = False
    return_text: StrictBool = False
    truncate: StrictBool = False
    truncation_direction: Literal["right", "left", "Right", "Left"] = "right"


class RerankHit(BaseModel):
    index: int
    score: float
    text: Optional[str] = None


class Document(BaseModel):
    """A Cohere document object: ``text`` and any other string fields (returned as sent)."""

    model_config = ConfigDict(extra="allow")
    text: Text
    __pydantic_extra__: dict[str, String]  # type: ignore[assignment]


class _CohereRerank(_Strict):
    model: Optional[String] = None
    query: Text
    top_n: Optional[Count] = None
    max_tokens_per_doc: Optional[Count] = Field(default=None, description="Documents are cut to this many tokens (then to the model's limit).")


class CohereRerankRequest(_CohereRerank):
    """Cohere v1 ``POST /v1/rerank`` (also Jina and infinity): documents as strings or objects."""

    documents: list[Union[Text, Document]] = Field(min_length=1)
    rank_fields: Optional[list[String]] = Field(default=None, min_length=1,
                                                description="Fields of object documents to rank on, in order; default: text.")  # fmt: skip
    return_documents: StrictBool = False
    max_chunks_per_doc: Optional[Count] = Field(default=None, description="Accepted for Cohere clients; long documents are truncated, not chunked.")

    def texts(self) -> list[str]:
        """What the model reads of each document: its text, or with ``rank_fields`` the ``field: value``
        lines of the named fields it has, in that order (its text when it has none of them)."""
        texts = []
        for document in self.documents:
            if isinstance(document, str):
                texts.append(document)
                continue
            values = document.model_dump()
            lines = [f"{name}: {values[name]}" for name in self.rank_fields or [] if str(values.get(name, "")).strip()]
            texts.append("\n".join(lines) if lines else document.text)
        return texts


class CohereV2RerankRequest(_CohereRerank):
    """Cohere v2 ``POST /v2/rerank`` (``cohere.ClientV2``, LangChain's ``CohereRerank``): documents as strings."""

    model: String = "jace"
    documents: list[Text] = Field(min_length=1)
    priority: Optional[Priority] = Field(default=None, description="Accepted for Cohere clients; requests are served in turn.")


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: Optional[dict[str, str]] = None


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereResult]
    meta: dict[str, Any]


class CohereV2Result(BaseModel):
    index: int
    relevance_score: float


class CohereV2RerankResponse(BaseModel):
    id: str
    results: list[CohereV2Result]
    meta: dict[str, Any]


class ScoreRequest(_Strict):
    """jace ``POST /score``: pairs such as (お題, 回答), scored by a model trained by jace."""

    pairs: list[tuple[Text, Text]] = Field(min_length=1)
    original_scale: StrictBool = False


class ScoreResponse(BaseModel):
    scores: list[float]


class PruneRequest(_Strict):
    """jace ``POST /prune``: keep the sentences of each context that matter to the query."""

    query: Text
    contexts: list[Text] = Field(min_length=1)
    # None: the pruner's saved default threshold (``jace evaluate-pruner --save-threshold``).
    threshold: Optional[Threshold] = None
    # None: the pruner's saved setting. True: the top-ranked context keeps at least its best sentence.
    keep_top_context: Optional[StrictBool] = None


class PrunedContext(BaseModel):
    pruned_context: str
    kept_sentences: list[int]
    sentence_spans: list[tuple[int, int]]
    sentence_probabilities: list[float]
    reranking_score: Optional[float]
    compression_rate: float


class PruneResponse(BaseModel):
    results: list[PrunedContext]


class Message(BaseModel):
    """Every error but a 422: what was wrong and how to go on."""

    detail: str


class FieldError(BaseModel):
    loc: list[Union[str, int]]
    msg: str
    type: str


class ValidationMessage(BaseModel):
    """A 422: one entry per bad field, ``loc`` naming it (``["body", "texts", 2]``)."""

    detail: list[FieldError]


class Health(BaseModel):
    status: Literal["ok", "loading", "degraded"]
    reason: Optional[str] = None
