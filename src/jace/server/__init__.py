"""``jace serve``: an HTTP server for reranking, scoring and context pruning, batched across requests.

Example:
    >>> from jace.server import serve
    >>> serve("runs/humor/final", port=8080)  # doctest: +SKIP
"""

from __future__ import annotations

from jace.server.app import ServerSettings, create_app
from jace.server.engine import Engine
from jace.server.loading import build_engine, serve

__all__ = ["Engine", "ServerSettings", "build_engine", "create_app", "serve"]
