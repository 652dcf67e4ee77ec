"""The HTTP side of ``jace serve``: FastAPI routes, limits, errors, the OpenAPI schema and the page.

Example:
    >>> from jace.server.app import ServerSettings, create_app
    >>> app = create_app(engine, ServerSettings(model_id="runs/humor/final"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8080)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Optional

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from jace import __version__
from jace.config import DEFAULT_MAX_REQUEST_BYTES
from jace.server.engine import Disconnected, Encoded, Engine, TooLong
from jace.server.guard import OPEN_PATHS, RequestGuard
from jace.server.schemas import (
    CohereRerankRequest,
    CohereRerankResponse,
    CohereResult,
    CohereV2RerankRequest,
    CohereV2RerankResponse,
    CohereV2Result,
    Health,
    Message,
    PrunedContext,
    PruneRequest,
    PruneResponse,
    RerankHit,
    RerankRequest,
    ScoreRequest,
    ScoreResponse,
    ValidationMessage,
)
from jace.server.telemetry import CONTENT_TYPE, Telemetry



@dataclass
class ServerSettings:
    """What ``/info`` reports and the limits every request is held to."""

    model_id: str
    pruner_id: Optional[str] = None
    dtype: str = "float32"
    device: str = "cpu"
    max_client_batch_size: int = 1000
    max_concurrent_requests: int = 512
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    request_timeout: float = 60.0
    max_batch_tokens: Optional[int] = 16384
    api_key: Optional[str] = None


class _Admission:
    """Counts requests past validation; beyond the limit a request is refused at once (429)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        if self.active >= self.limit:
            raise HTTPException(429, f"more than {self.limit} requests are waiting (--max-concurrent-requests); retry shortly.",
                                headers={"Retry-After": "1"})  # fmt: skip
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


_DESCRIPTIONS = {
    400: "The body is not JSON.",
    401: "Missing or wrong API key.",
    413: "Over a size limit: the body (--max-request-bytes), the texts in one request (--max-client-batch-size), "
    "or a text over the model's token limit without truncate.",
    422: "A field is missing, of the wrong type or out of range; loc names it.",
    429: "Too many requests waiting (--max-concurrent-requests); retry after Retry-After seconds.",
    504: "The request took longer than --request-timeout; its remaining batches were dropped.",
}


def _errors(settings: ServerSettings, *codes: int) -> dict[int | str, dict[str, Any]]:
    """The error responses a route can give, as the OpenAPI schema declares them (always JSON)."""
    if settings.api_key is not None:
        codes = (401, *codes)
    declared: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model = ValidationMessage if code == 422 else Message
        schema = {"$ref": f"#/components/schemas/{model.__name__}"}
        declared[code] = {"model": model, "description": _DESCRIPTIONS[code], "content": {"application/json": {"schema": schema}}}
    return declared


def _safe(text: Any) -> str:
    """``text`` as a string that JSON can always encode (a lone surrogate becomes ``\\ud800``)."""
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def field_error(message: str, *loc: str | int, kind: str = "value_error") -> JSONResponse:
    """A 422 in the validation shape: ``{"detail": [{"loc", "msg", "type"}]}``."""
    return JSONResponse({"detail": [{"loc": ["body", *loc], "msg": _safe(message), "type": kind}]}, status_code=422)


class _FieldError(Exception):
    def __init__(self, message: str, *loc: str | int) -> None:
        super().__init__(message)
        self.loc = loc


def create_app(engine: Engine, settings: ServerSettings) -> FastAPI:
    """The FastAPI application serving ``engine`` under ``settings``; starts and stops the model worker."""
    telemetry = Telemetry()
    engine.on_batch = telemetry.on_batch
    admit = _Admission(settings.max_concurrent_requests)
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        await engine.score([("warm-up", "warm-up")])  # /health turns 200 only after a real batch
        if engine.pruner is not None:
            await engine.prune("warm-up", ["warm-up."])
        state["ready"] = True
        yield
        state["ready"] = False
        await run_in_threadpool(engine.stop)  # in-flight work finishes first

    app = FastAPI(title="jace serve", version=__version__, lifespan=lifespan,
                  description="Japanese cross-encoder reranking, scoring and context pruning, batched across requests.")  # fmt: skip
    app.add_middleware(RequestGuard, routes=app.routes, telemetry=telemetry, api_key=settings.api_key,
                       max_request_bytes=settings.max_request_bytes)  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        # Never echo the input: it may be what JSON cannot encode (a lone surrogate, NaN, a huge number).
        problems = error.errors()
        unparsed = next((p for p in problems if p.get("type") == "json_invalid"), None)
        if unparsed is not None:
            where = unparsed["loc"][-1] if len(unparsed["loc"]) > 1 else "?"
            reason = (unparsed.get("ctx") or {}).get("error", "invalid JSON")
            return JSONResponse({"detail": _safe(f"the body is not valid JSON: {reason} (at character {where}).")}, status_code=400)
        detail = [{"loc": [p if isinstance(p, int) else _safe(p) for p in problem["loc"]], "msg": _safe(problem["msg"]),
                   "type": _safe(problem["type"])} for problem in problems]  # fmt: skip
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(_FieldError)
    async def bad_field(_: Request, error: _FieldError) -> JSONResponse:
        return field_error(str(error), *error.loc)

    def within_batch_limit(count: int, what: str) -> None:
        if count > settings.max_client_batch_size:
            raise HTTPException(413, f"{count} {what} in one request; the limit is {settings.max_client_batch_size} "
                                     "(--max-client-batch-size). Split the request.")  # fmt: skip

    async def encode(pairs: list[tuple[str, str]], truncate: bool, what: str) -> Encoded:
        """Tokenize once, in a worker thread; an over-long pair is a 413 unless it may be truncated."""
        try:
            return await run_in_threadpool(engine.encode_pairs, pairs, truncate=truncate)
        except TooLong as error:
            raise HTTPException(413, f"{what} {error.index} is over the model's limit of {error.limit} tokens with the query "
                                     f"({error.count} such); send truncate=true or shorter texts.") from None  # fmt: skip

    async def answers(request: Request, encoded: Encoded, key: tuple) -> list[Any]:
        """The engine's answers; a timeout is a 504, a client gone is a 499, an engine ValueError a 422."""

        async def gone() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        try:
            return await engine.run(encoded, key, timeout=settings.request_timeout, disconnected=gone)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the request took longer than {settings.request_timeout:g} s (--request-timeout); "
                                     "retry, or send fewer texts.") from None  # fmt: skip
        except Disconnected:
            raise HTTPException(499, "the client closed the connection; its remaining batches were dropped.") from None
        except ValueError as error:
            raise _FieldError(str(error)) from None

    async def cut(texts: list[str], side: str, field: str, **limits: Any) -> list[str]:
        try:
            return await run_in_threadpool(lambda: engine.cut(texts, side, **limits))
        except LookupError as error:
            raise _FieldError(str(error), field) from None

    async def ranked_documents(request: Request, query: str, texts: list[str], max_tokens_per_doc: Optional[int]) -> tuple[list[float], int]:
        within_batch_limit(len(texts), "documents")
        async with admit():
            if max_tokens_per_doc is not None:
                texts = await cut(texts, "right", "max_tokens_per_doc", budget=max_tokens_per_doc)
            encoded = await encode([(query, text) for text in texts], True, "document")
            return await answers(request, encoded, (False, False)), encoded.tokens

    @app.post("/rerank", response_model=list[RerankHit], response_model_exclude_none=True,
              responses=_errors(settings, 400, 413, 422, 429, 504))  # fmt: skip
    async def rerank(body: RerankRequest, request: Request) -> list[RerankHit]:
        """Rank texts for a query, best first (Hugging Face text-embeddings-inference compatible)."""
        within_batch_limit(len(body.texts), "texts")
        async with admit():
            texts = body.texts
            if body.truncate and body.truncation_direction.lower() == "left":
                texts = await cut(texts, "left", "truncation_direction", query=body.query)
            encoded = await encode([(body.query, text) for text in texts], body.truncate, "text")
            result = await answers(request, encoded, (body.raw_scores, False))
        order = sorted(range(len(result)), key=lambda i: result[i], reverse=True)
        return [RerankHit(index=i, score=result[i], text=body.texts[i] if body.return_text else None) for i in order]

    @app.post("/v1/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True,
              responses=_errors(settings, 400, 413, 422, 429, 504))  # fmt: skip
    async def rerank_v1(body: CohereRerankRequest, request: Request) -> CohereRerankResponse:
        """Rank documents for a query (Cohere v1, Jina and infinity compatible); long documents are truncated.

        Object documents are ranked on ``text``, or on the ``rank_fields`` they name, as ``field: value`` lines.
        """
        result, tokens = await ranked_documents(request, body.query, body.texts(), body.max_tokens_per_doc)
        order = sorted(range(len(result)), key=lambda i: result[i], reverse=True)[: body.top_n]
        documents = [doc.model_dump(exclude_none=True) if not isinstance(doc, str) else {"text": doc} for doc in body.documents]
        return CohereRerankResponse(
            id=str(uuid.uuid4()),
            results=[CohereResult(index=i, relevance_score=result[i], document=documents[i] if body.return_documents else None)
                     for i in order],
            meta=_meta("1", tokens, body.model or settings.model_id),
        )  # fmt: skip

    @app.post("/v2/rerank", response_model=CohereV2RerankResponse, responses=_errors(settings, 400, 413, 422, 429, 504))
    async def rerank_v2(body: CohereV2RerankRequest, request: Request) -> CohereV2RerankResponse:
        """Rank documents for a query (Cohere v2: ``cohere.ClientV2``, LangChain's ``CohereRerank``)."""
        result, tokens = await ranked_documents(request, body.query, body.documents, body.max_tokens_per_doc)
        order = sorted(range(len(result)), key=lambda i: result[i], reverse=True)[: body.top_n]
        return CohereV2RerankResponse(id=str(uuid.uuid4()), results=[CohereV2Result(index=i, relevance_score=result[i]) for i in order],
                                      meta=_meta("2", tokens, body.model))  # fmt: skip

    @app.post("/score", response_model=ScoreResponse, responses=_errors(settings, 400, 413, 422, 429, 504))
    async def score(body: ScoreRequest, request: Request) -> ScoreResponse:
        """Score pairs such as (お題, 回答); ``original_scale`` maps back to the training data's scale."""
        within_batch_limit(len(body.pairs), "pairs")
        if body.original_scale and engine.scaler is None:
            raise _FieldError("this model has no target scaler (target_scaler.json); it is saved with models trained by "
                              "jace. Scores are on 0..1.", "original_scale")  # fmt: skip
        async with admit():
            encoded = await encode([tuple(pair) for pair in body.pairs], True, "pair")  # type: ignore[misc]
            return ScoreResponse(scores=await answers(request, encoded, (False, body.original_scale)))

    @app.post("/prune", response_model=PruneResponse, responses={
        **_errors(settings, 400, 413, 422, 429, 504),
        404: {"model": Message, "description": "No pruner is loaded (start the server with --pruner FOLDER)."}})  # fmt: skip
    async def prune(body: PruneRequest, request: Request) -> PruneResponse:
        """Keep the sentences of each context that matter to the query; rerank scores come from the same pass."""
        within_batch_limit(len(body.contexts), "contexts")
        if engine.pruner is None:
            raise HTTPException(404, "no pruner is loaded; start the server with --pruner FOLDER, or serve a PruningEncoder folder.")
        async with admit():
            encoded = await run_in_threadpool(engine.encode_contexts, body.query, body.contexts)
            results = await answers(request, encoded, (body.threshold, body.keep_top_context))
        return PruneResponse(results=[
            PrunedContext(
                pruned_context=r.pruned_context, kept_sentences=r.kept_indices,
                sentence_spans=r.sentence_spans, sentence_probabilities=r.sentence_probabilities,
                reranking_score=r.reranking_score, compression_rate=r.compression_rate,
            ) for r in results
        ])  # fmt: skip

    @app.get("/health", response_model=Health, response_model_exclude_none=True,
             responses={503: {"model": Health, "description": "Loading, or degraded: the model worker is stalled (reason says why)."}})  # fmt: skip
    async def health() -> Response:
        """200 once the model is loaded and has scored a warm-up batch; 503 before, and while the worker is stalled."""
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503)
        reason = engine.stalled(settings.request_timeout)
        if reason is not None:
            return JSONResponse({"status": "degraded", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/info", responses=_errors(settings))
    async def info() -> dict[str, Any]:
        """Model, mode, precision, device, limits and version."""
        limits = {k: v for k, v in asdict(settings).items() if k.startswith(("max_", "request_"))}
        mode = "+".join(m for m, on in (("rerank", True), ("prune", engine.pruner is not None)) if on)
        return {"model_id": settings.model_id, "pruner_id": settings.pruner_id, "mode": mode, "dtype": settings.dtype,
                "device": settings.device, "max_length": engine.max_length, "original_scale": engine.scaler is not None,
                "limits": limits, "auth": settings.api_key is not None, "version": __version__}  # fmt: skip

    @app.get("/metrics", response_class=PlainTextResponse, responses={
        200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}, "description": "Prometheus text format."},
        **_errors(settings)})  # fmt: skip
    async def metrics() -> Response:
        """Prometheus metrics (requests by route template and status, latency, batch sizes, queue depth)."""
        telemetry.queue_depth.set(engine.pending)
        return Response(telemetry.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("jace.server").joinpath("page.html").read_text(encoding="utf-8"))

    app.openapi = lambda: _openapi(app, settings, engine.scaler is not None)  # type: ignore[method-assign]
    return app


def _meta(version: str, tokens: int, model: str) -> dict[str, Any]:
    return {"api_version": {"version": version}, "billed_units": {"search_units": 1},
            "tokens": {"input_tokens": tokens, "output_tokens": 0}, "model": model}  # fmt: skip


#: The list fields held to --max-client-batch-size, declared as maxItems.
_BATCH_FIELDS: Sequence[tuple[str, str]] = (("RerankRequest", "texts"), ("CohereRerankRequest", "documents"),
                                           ("CohereV2RerankRequest", "documents"), ("ScoreRequest", "pairs"),
                                           ("PruneRequest", "contexts"))  # fmt: skip


def _openapi(app: FastAPI, settings: ServerSettings, scaler: bool) -> dict[str, Any]:
    """FastAPI's schema, plus what it cannot see: the batch limits, the bearer scheme when a key is set,
    and ``original_scale`` for a model without a target scaler."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    components = schema.setdefault("components", {})
    for name, field in _BATCH_FIELDS:
        for variant in (name, f"{name}-Input"):
            prop = components.get("schemas", {}).get(variant, {}).get("properties", {}).get(field)
            if prop is not None:
                prop["maxItems"] = settings.max_client_batch_size
    if not scaler:  # what the server does: original_scale=true is a 422 for a model without a target scaler
        for variant in ("ScoreRequest", "ScoreRequest-Input"):
            prop = components.get("schemas", {}).get(variant, {}).get("properties", {}).get("original_scale")
            if prop is not None:
                prop.update({"enum": [False], "description": "Always false here: this model has no target scaler."})
    if settings.api_key is not None:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in schema["paths"].items():
            if path not in OPEN_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
    app.openapi_schema = schema
    return schema
