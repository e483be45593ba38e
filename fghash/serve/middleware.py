"""ASGI middleware of the server: the upload size limit, and per-endpoint metrics.

:class:`BodyLimit` reads a request's body (up to the limit) before the app sees it and
answers 413 once it is larger, whether or not ``Content-Length`` said so; the app then
reads the buffered copy. :class:`Observe` counts every answer by route template and
status and times it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fghash.serve.metrics import Metrics

__all__ = ["BodyLimit", "Observe", "send_error"]


async def send_error(send: Any, status: int, sentence: str) -> None:
    """Answer ``{"error": sentence}`` with ``status`` straight from ASGI."""
    body = json.dumps({"error": sentence}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 and one sentence."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_big = f"the request body is over this server's limit of {self._mb()} (--max-upload-mb)."
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(send, 413, too_big)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(send, 413, too_big)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _mb(self) -> str:
        return f"{self.max_bytes / 2**20:g} MiB"


class Observe:
    """``fghash_requests_total`` and ``fghash_request_seconds`` for every request."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            endpoint = f"{scope['method']} {getattr(route, 'path', 'unmatched')}"
            self.metrics.observe(endpoint, status, time.perf_counter() - t0)
