"""Ollama's `POST /api/chat`, non-streamed, written straight onto the keep-alive transport.

The chat request is the hot path: one per job. Through `ollama.AsyncClient` each one also
builds and validates the request as pydantic models, and goes through httpx's client (the URL
merged with the base URL, a request object, redirects, cookies extracted from the answer):
against the stand-in about 0.64 ms of CPU per request on the same transport, where this path
takes about 0.13 ms (`python -m bench transport`). What stays the `ollama` package's is what the answer
means: the body is read as its `ChatResponse`, and an error status raises its
`ResponseError`, so the backend turns both into messages exactly as before. The other calls
(`/api/tags`, `/api/ps`, `/api/pull`) keep the client: they are rare.

On the wire it sends what the client sends: JSON with `stream: false`, images as base64, the
URL's path prefix (Ollama behind a proxy), basic auth from the URL's user:password@, and
`Authorization: Bearer $OLLAMA_API_KEY` when that is set, as the client does.
"""

import base64
import os
from collections.abc import Sequence
from typing import Any

import httpx
import ollama
from pydantic import ValidationError

from bridge import __version__
from bridge.pipeline.http_transport import KeepAliveTransport, origin_of
from bridge.pipeline.jsontext import dumps


class ChatAnswerInvalid(Exception):
    """A 2xx answer that is not a chat answer (a proxy's page, a server that is not Ollama)."""


class OllamaChat:
    """Non-streamed chat requests to one Ollama base URL, on keep-alive connections."""

    def __init__(self, url: str, *, connect_timeout: float, max_idle: int) -> None:
        parsed = httpx.URL(url)
        self._origin = origin_of(parsed)
        self._connect_timeout = connect_timeout
        self._transport = KeepAliveTransport(max_idle=max_idle)
        path = parsed.raw_path.partition(b"?")[0].rstrip(b"/") + b"/api/chat"
        headers = [
            b"POST " + path + b" HTTP/1.1",
            b"Host: " + parsed.netloc,
            b"Content-Type: application/json",
            b"Accept: application/json",
            b"User-Agent: llm2mqtt/" + __version__.encode(),
        ]
        if parsed.username or parsed.password:
            secret = f"{parsed.username}:{parsed.password}".encode()
            headers.append(b"Authorization: Basic " + base64.b64encode(secret))
        elif api_key := os.getenv("OLLAMA_API_KEY"):
            headers.append(b"Authorization: Bearer " + api_key.encode())
        self._head = b"\r\n".join(headers) + b"\r\nContent-Length: "

    async def chat(
        self,
        *,
        model: str,
        messages: Sequence[dict[str, Any]],
        format: dict[str, Any] | None,
        options: dict[str, Any],
        keep_alive: str | float | None,
    ) -> ollama.ChatResponse:
        """One answer. Raises ollama.ResponseError for an error status, ChatAnswerInvalid for
        an answer that is not Ollama's, and the transport's httpx errors."""
        request: dict[str, Any] = {
            "model": model,
            "messages": [_wire_message(m) for m in messages],
            "stream": False,
            "options": options,
        }
        if format is not None:
            request["format"] = format
        if keep_alive is not None:
            request["keep_alive"] = keep_alive
        body = dumps(request)
        status, headers, answer = await self._transport.send(
            self._origin,
            self._head + b"%d\r\n\r\n" % len(body) + body,
            connect_timeout=self._connect_timeout,
        )
        if status >= 300:
            raise ollama.ResponseError(_error_text(status, headers, answer), status)
        try:
            return ollama.ChatResponse.model_validate_json(answer)
        except ValidationError as exc:
            shown = answer[:80].decode("utf-8", "replace")
            raise ChatAnswerInvalid(
                f"HTTP {status} with a body that is not a chat answer ({exc.error_count()} "
                f"errors; it begins {shown!r})"
            ) from None

    async def aclose(self) -> None:
        await self._transport.aclose()


def _wire_message(message: dict[str, Any]) -> dict[str, Any]:
    """A message as Ollama reads it: images (bytes) as base64, empty fields left out."""
    wire = {k: v for k, v in message.items() if v}
    if images := wire.get("images"):
        wire["images"] = [
            base64.b64encode(i).decode() if isinstance(i, bytes | bytearray) else i for i in images
        ]
    return wire


def _error_text(status: int, headers: list[tuple[bytes, bytes]], answer: bytes) -> str:
    """What ollama.ResponseError reads the error from: Ollama's JSON body, or a redirect's
    target (the client followed redirects; this path says where to point ollama.url)."""
    if 300 <= status < 400:
        location = next((v for k, v in headers if k.strip().lower() == b"location"), b"?")
        return f"redirected to {location.decode('latin-1')}: set ollama.url to where Ollama answers"
    return answer.decode("utf-8", "replace")
