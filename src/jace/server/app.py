"""The HTTP side of ``jace serve``: FastAPI routes, limits, auth, metrics and the page.

Example:
    >>> from jace.server.app import ServerSettings, create_app
    >>> app = create_app(engine, ServerSettings(model_id="runs/humor/final"))  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8080)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from jace import __version__
from jace.server.engine import Engine, Pair
from jace.server.schemas import (
    CohereRerankRequest,
    CohereRerankResponse,
    CohereResult,
    Document,
    PrunedContext,
    PruneRequest,
    PruneResponse,
    RerankHit,
    RerankRequest,
    ScoreRequest,
    ScoreResponse,
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

    @app.middleware("http")
    async def measure(request: Request, call_next):
        started = time.perf_counter()
        route = request.url.path
        try:
            response = await call_next(request)
        except Exception:
            telemetry.requests.labels(route=route, status="500").inc()
            raise
        if route not in ("/metrics",):
            telemetry.requests.labels(route=route, status=str(response.status_code)).inc()
            telemetry.latency.labels(route=route).observe(time.perf_counter() - started)
        return response

    def authorized(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), settings.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer KEY'.",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    guarded = [Depends(authorized)]

    async def lengths_within(pairs: list[Pair], truncate: bool, what: str) -> int:
        """Token count of the pairs; over-long pairs are a 413 unless they may be truncated."""
        lengths = await run_in_threadpool(engine.pair_lengths, pairs)
        if not truncate:
            too_long = [i for i, n in enumerate(lengths) if n > engine.max_length]
            if too_long:
                raise HTTPException(413, f"{what} {too_long[0]} is {lengths[too_long[0]]} tokens with the query, over the "
                                         f"model's limit of {engine.max_length} ({len(too_long)} such); send truncate=true "
                                         "or shorter texts.")  # fmt: skip
        return sum(min(n, engine.max_length) for n in lengths)

    def within_batch_limit(count: int, what: str) -> None:
        if count > settings.max_client_batch_size:
            raise HTTPException(413, f"{count} {what} in one request; the limit is {settings.max_client_batch_size} "
                                     "(--max-client-batch-size). Split the request.")  # fmt: skip

    async def scores(pairs: list[Pair], tokens: int, **options: Any) -> list[float]:
        try:
            return await engine.score(pairs, tokens=tokens, timeout=settings.request_timeout, **options)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the request took longer than {settings.request_timeout:g} s; retry or send fewer texts.") from None
        except ValueError as error:
            raise HTTPException(422, str(error)) from None

    @app.post("/rerank", response_model=list[RerankHit], response_model_exclude_none=True, dependencies=guarded)
    async def rerank(body: RerankRequest) -> list[RerankHit]:
        """Rank texts for a query, best first (Hugging Face text-embeddings-inference compatible)."""
        within_batch_limit(len(body.texts), "texts")
        async with admit():
            texts = body.texts
            if body.truncate and body.truncation_direction == "left":
                texts = await run_in_threadpool(_cut_left, engine, body.query, texts)
            pairs = [(body.query, text) for text in texts]
            tokens = await lengths_within(pairs, body.truncate, "text")
            result = await scores(pairs, tokens, raw_scores=body.raw_scores)
        order = sorted(range(len(result)), key=lambda i: result[i], reverse=True)
        return [RerankHit(index=i, score=result[i], text=body.texts[i] if body.return_text else None) for i in order]

    @app.post("/v1/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True, dependencies=guarded)
    async def rerank_v1(body: CohereRerankRequest) -> CohereRerankResponse:
        """Rank documents for a query (Cohere, Jina and infinity compatible); long documents are truncated."""
        within_batch_limit(len(body.documents), "documents")
        texts = [doc.text if isinstance(doc, Document) else doc for doc in body.documents]
        async with admit():
            pairs = [(body.query, text) for text in texts]
            tokens = await lengths_within(pairs, True, "document")
            result = await scores(pairs, tokens)
        order = sorted(range(len(result)), key=lambda i: result[i], reverse=True)[: body.top_n]
        return CohereRerankResponse(
            id=str(uuid.uuid4()),
            results=[CohereResult(index=i, relevance_score=result[i],
                                  document=Document(text=texts[i]) if body.return_documents else None) for i in order],
            meta={"api_version": {"version": "1"}, "billed_units": {"search_units": 1},
                  "tokens": {"input_tokens": tokens, "output_tokens": 0}, "model": body.model or settings.model_id},
        )  # fmt: skip

    @app.post("/score", response_model=ScoreResponse, dependencies=guarded)
    async def score(body: ScoreRequest) -> ScoreResponse:
        """Score pairs such as (お題, 回答); ``original_scale`` maps back to the training data's scale."""
        within_batch_limit(len(body.pairs), "pairs")
        if body.original_scale and engine.scaler is None:
            raise HTTPException(422, "original_scale: this model has no target scaler (target_scaler.json); it is saved "
                                     "with models trained by jace. Scores are on 0..1.")  # fmt: skip
        async with admit():
            pairs = [tuple(pair) for pair in body.pairs]
            tokens = await lengths_within(pairs, True, "pair")
            return ScoreResponse(scores=await scores(pairs, tokens, original_scale=body.original_scale))

    @app.post("/prune", response_model=PruneResponse, dependencies=guarded)
    async def prune(body: PruneRequest) -> PruneResponse:
        """Keep the sentences of each context that matter to the query; rerank scores come from the same pass."""
        within_batch_limit(len(body.contexts), "contexts")
        if engine.pruner is None:
            raise HTTPException(400, "no pruner is loaded; start the server with --pruner FOLDER, or serve a PruningEncoder folder.")
        async with admit():
            try:
                results = await engine.prune(body.query, body.contexts, threshold=body.threshold,
                                             keep_top_context=body.keep_top_context,
                                             timeout=settings.request_timeout)  # fmt: skip
            except asyncio.TimeoutError:
                raise HTTPException(504, f"the request took longer than {settings.request_timeout:g} s.") from None
        return PruneResponse(results=[
            PrunedContext(
                pruned_context=r.pruned_context,
                kept_sentences=r.kept_indices,
                sentence_spans=r.sentence_spans, sentence_probabilities=r.sentence_probabilities,
                reranking_score=r.reranking_score, compression_rate=r.compression_rate,
            ) for r in results
        ])  # fmt: skip

    @app.get("/health")
    async def health() -> Response:
        """200 once the model is loaded and has scored a warm-up batch; 503 before."""
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/info", dependencies=guarded)
    async def info() -> dict[str, Any]:
        """Model, mode, precision, device, limits and version."""
        limits = {k: v for k, v in asdict(settings).items() if k.startswith(("max_", "request_"))}
        mode = "+".join(m for m, on in (("rerank", True), ("prune", engine.pruner is not None)) if on)
        return {"model_id": settings.model_id, "pruner_id": settings.pruner_id, "mode": mode, "dtype": settings.dtype,
                "device": settings.device, "max_length": engine.max_length, "original_scale": engine.scaler is not None,
                "limits": limits, "auth": settings.api_key is not None, "version": __version__}  # fmt: skip

    @app.get("/metrics", dependencies=guarded)
    async def metrics() -> Response:
        """Prometheus metrics."""
        telemetry.queue_depth.set(engine.pending)
        return Response(telemetry.render(), media_type=CONTENT_TYPE)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("jace.server").joinpath("page.html").read_text(encoding="utf-8"))

    return app


def _cut_left(engine: Engine, query: str, texts: list[str]) -> list[str]:
    """Drop the start of texts too long for the model, keeping the end (TEI's truncation_direction=left)."""
    tokenizer = engine.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise HTTPException(422, "truncation_direction=left needs a fast tokenizer; this model's has no offsets.")
    special = len(tokenizer("a", "b")["input_ids"]) - len(tokenizer("a", add_special_tokens=False)["input_ids"]) * 2
    budget = max(engine.max_length - special - len(tokenizer(query, add_special_tokens=False)["input_ids"]), 1)
    cut = []
    for text in texts:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
        cut.append(text if len(offsets) <= budget else text[offsets[-budget][0] :])
    return cut
