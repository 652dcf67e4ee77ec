"""``jace serve``: run the HTTP server."""

from __future__ import annotations

from typing import Optional

import typer

from jace.cli import DeviceOption, DtypeOption, app
from jace.config import DEFAULT_MAX_REQUEST_BYTES


@app.command(
    epilog="Examples:\n\n"
    "  jace serve runs/humor/merged                          # 127.0.0.1:8080, page at /, API docs at /docs\n\n"
    "  jace serve hotchpotch/japanese-reranker-cross-encoder-large-v1 --pruner runs/pruner/final --port 9000\n\n"
    "  JACE_API_KEY=secret jace serve runs/pruner/final --host 0.0.0.0   # a PruningEncoder serves rerank and prune\n\n"
    "  curl -s localhost:8080/rerank -H 'Content-Type: application/json' "
    "-d '{\"query\": \"猫の好物は？\", \"texts\": [\"魚です。\", \"車です。\"]}'"
)
def serve(
    model: str = typer.Argument(..., help="Reranker: hub id, folder, LoRA adapter folder, merged export, or a PruningEncoder folder."),
    pruner: Optional[str] = typer.Option(None, "--pruner", help="PruningEncoder folder that serves /prune."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port to bind."),
    device: Optional[str] = DeviceOption,
    dtype: Optional[str] = DtypeOption,
    max_batch_tokens: int = typer.Option(16384, "--max-batch-tokens", min=1, help="Padded tokens per model batch."),
    max_client_batch_size: int = typer.Option(1000, "--max-client-batch-size", min=1, help="Texts per request; more is a 413."),
    max_concurrent_requests: int = typer.Option(512, "--max-concurrent-requests", min=1, help="Requests waiting at once; more is a 429."),
    max_request_bytes: int = typer.Option(DEFAULT_MAX_REQUEST_BYTES, "--max-request-bytes", min=1024,
                                          help="Largest request body; more is a 413, answered before the body is read."),
    request_timeout: float = typer.Option(60.0, "--request-timeout", min=0.1,
                                          help="Seconds a request may take; longer is a 504 and its remaining batches are dropped."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Pairs per model batch (also bounded by --max-batch-tokens)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="JACE_API_KEY", help="Require 'Authorization: Bearer KEY' (not on /health)."),
) -> None:
    """Serve reranking (TEI /rerank, Cohere /v1/rerank and /v2/rerank), /score and /prune over HTTP, batched across requests."""
    from jace.server import serve as run_server

    run_server(model, pruner, host=host, port=port, device=device, dtype=dtype, max_batch_tokens=max_batch_tokens,
               max_client_batch_size=max_client_batch_size, max_concurrent_requests=max_concurrent_requests,
               request_timeout=request_timeout, api_key=api_key, batch_size=batch_size,
               max_request_bytes=max_request_bytes)  # fmt: skip
