"""What ``jace serve`` checks before the app reads a byte of a request: which route it is (the
metrics label), the API key, and the body size. A plain ASGI middleware, so a refused request
costs no parsing, and a body over the limit is never held whole.

Example:
    >>> app.add_middleware(RequestGuard, routes=app.routes, telemetry=Telemetry(), api_key=None,
    ...                    max_request_bytes=4 << 20)  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.routing import Match

from jace.server.telemetry import Telemetry

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Paths anyone may read, with or without the API key (a load balancer's health check, the page, the API docs).
OPEN_PATHS = frozenset({"/health", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
#: The one metrics label of every path that is no route, so a scanner cannot grow the series.
UNMATCHED = "unmatched"


class RequestGuard:
    """ASGI middleware in front of the FastAPI app: route template, API key, body limit, request metrics."""

    def __init__(self, app: Any, *, routes: list[Any], telemetry: Telemetry, api_key: str | None, max_request_bytes: int) -> None:
        self.app, self.routes, self.telemetry = app, routes, telemetry
        self.api_key = api_key.encode() if api_key else None
        self.max_request_bytes = max_request_bytes

    def route_of(self, scope: Scope) -> str:
        """The route's path template (``/rerank``), or :data:`UNMATCHED`."""
        for route in self.routes:
            match, _ = route.matches(scope)
            if match in (Match.FULL, Match.PARTIAL):  # PARTIAL: the path with another method (a 405)
                return getattr(route, "path", UNMATCHED)
        return UNMATCHED

    def authorized(self, scope: Scope) -> bool:
        if self.api_key is None or scope["path"] in OPEN_PATHS:
            return True
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token, self.api_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = self.route_of(scope)
        status = {"code": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            if not self.authorized(scope):
                await _refuse(sending, 401, "missing or wrong API key: send 'Authorization: Bearer KEY'.",
                              {"WWW-Authenticate": "Bearer"})  # fmt: skip
                return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                body = await self._read_body(scope, receive, sending)
                if body is None:
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, sending)
        finally:
            if route != "/metrics":
                self.telemetry.requests.labels(route=route, status=str(status["code"])).inc()
                self.telemetry.latency.labels(route=route).observe(time.perf_counter() - started)

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body, or None after answering 413 as soon as it is known to be over the limit."""
        limit = self.max_request_bytes
        too_big = (f"the request body is over {limit} bytes (--max-request-bytes); send fewer or shorter texts, "
                   "or split the request.")  # fmt: skip
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, 413, too_big, {"Connection": "close"})
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _refuse(send, 413, too_big, {"Connection": "close"})
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the app the body already read, then passes the client's disconnect on."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _refuse(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
