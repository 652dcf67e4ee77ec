"""Loading what ``jace serve`` serves: a reranker (any folder or hub id jace loads), a PruningEncoder, or both."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

from jace.config import DEFAULT_MAX_REQUEST_BYTES
from jace.server.app import ServerSettings, create_app
from jace.server.engine import Engine


def is_pruning_folder(path: str | Path) -> bool:
    """Whether ``path`` is a local PruningEncoder folder (its config says model_type pruning_encoder)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "pruning_encoder"
    except ValueError:
        return False


def precision_name(model: Any) -> str:
    """'int8', 'float32', 'bfloat16' or 'float16': what a loaded reranker or pruner computes in."""
    return "int8" if model.quantized else str(model.dtype).replace("torch.", "")


def build_engine(model: str, pruner: Optional[str] = None, *, device: Optional[str] = None, dtype: Optional[str] = None,
                 max_batch_tokens: Optional[int] = 16384, batch_size: int = 32) -> tuple[Engine, ServerSettings]:  # fmt: skip
    """Load the models: MODEL as a reranker (or as a PruningEncoder serving both), plus an optional pruner."""
    from jace.pruning import PruningEncoder
    from jace.scoring import RerankerCrossEncoderClient

    if is_pruning_folder(model):
        if pruner is not None:
            raise ValueError(f"{model} is a PruningEncoder, which already prunes; drop --pruner or serve a reranker as MODEL.")
        loaded_pruner, reranker = PruningEncoder.from_pretrained(model, device=device, dtype=dtype), None
        settings = ServerSettings(model_id=str(model), pruner_id=str(model), device=str(loaded_pruner.device),
                                  dtype=precision_name(loaded_pruner))  # fmt: skip
    else:
        reranker = RerankerCrossEncoderClient(model, device=device, dtype=dtype, max_batch_tokens=max_batch_tokens)
        loaded_pruner = PruningEncoder.from_pretrained(pruner, device=device, dtype=dtype) if pruner else None
        settings = ServerSettings(model_id=str(model), pruner_id=pruner, device=str(reranker.device), dtype=precision_name(reranker))
    settings = replace(settings, max_batch_tokens=max_batch_tokens)
    return Engine(reranker, loaded_pruner, batch_size=batch_size), settings


def serve(model: str, pruner: Optional[str] = None, *, host: str = "127.0.0.1", port: int = 8080,
          device: Optional[str] = None, dtype: Optional[str] = None, max_batch_tokens: Optional[int] = 16384,
          max_client_batch_size: int = 1000, max_concurrent_requests: int = 512, request_timeout: float = 60.0,
          api_key: Optional[str] = None, batch_size: int = 32, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:  # fmt: skip
    """Load the models and run the server until SIGINT/SIGTERM (in-flight requests finish first)."""
    import uvicorn

    engine, settings = build_engine(model, pruner, device=device, dtype=dtype, max_batch_tokens=max_batch_tokens,
                                    batch_size=batch_size)  # fmt: skip
    settings = replace(settings, max_client_batch_size=max_client_batch_size, max_concurrent_requests=max_concurrent_requests,
                       request_timeout=request_timeout, api_key=api_key or None, max_request_bytes=max_request_bytes)  # fmt: skip
    uvicorn.run(create_app(engine, settings), host=host, port=port, log_level="info",
                timeout_graceful_shutdown=int(request_timeout) + 5)  # fmt: skip
