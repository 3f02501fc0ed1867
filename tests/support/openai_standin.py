"""A stand-in for an OpenAI-compatible server (`/v1/chat/completions`, `/v1/models`), for tests
and benchmarks.

It answers like the hosted API on the wire: `response_format` json_schema (strict schemas must
close every object with `additionalProperties: false`, or the request is refused with the API's
own 400 wording; `supports_strict=False` refuses strict like servers without it), images as
data URLs, error bodies `{"error": {"message", "type", "param", "code"}}` for 401/404/429/500,
server-sent events when `stream` is true (with `stream_options.include_usage`), keep-alive, and
TCP_NODELAY. Answers depend on the request (the Ollama stand-in's rules: an image's brightness
decides a yes/no), so a test proves the image arrived. Every request is recorded; the peak of
concurrent generations is counted before the `parallel` limit, so a client that sends too many
at once is seen. Manual use: ``python -m tests.openai_standin --port 8080``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import io
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, ImageStat, UnidentifiedImageError

from tests.support.ollama_standin import ChatRequest, default_reply

JSON = dict[str, Any]
DEFAULT_MODELS = ("gpt-4o-mini", "qwen2.5-vl-7b-instruct")
# Wording of the hosted API's errors.
ERRORS: dict[int, JSON] = {
    401: {
        "message": "Incorrect API key provided: {key}. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    },
    404: {
        "message": "The model `{model}` does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": None,
        "code": "model_not_found",
    },
    429: {
        "message": "Rate limit reached for {model} in organization org-standin on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 20s.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    },
    500: {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    },
}


@dataclass(frozen=True)
class Seen:
    """One chat request as the stand-in understood it."""

    model: str
    messages: list[JSON]
    response_format: JSON | None
    stream: bool
    images: list[bytes] = field(default_factory=list)
    brightness: list[float] = field(default_factory=list)
    text: str = ""


class _Refused(Exception):
    def __init__(self, status: int, error: JSON) -> None:
        super().__init__(error["message"])
        self.status, self.error = status, error


def _error(status: int, **values: str) -> _Refused:
    body = dict(ERRORS[status])
    body["message"] = str(body["message"]).format(**{"key": "", "model": "", **values})
    return _Refused(status, body)


def _bad_request(message: str, param: str | None = None) -> _Refused:
    return _Refused(400, {"message": message, "type": "invalid_request_error", "param": param, "code": None})


def _strict_problem(schema: Any, at: str = "()") -> str | None:
    """Why a schema is not valid in strict mode (the hosted API's rule), or None."""
    if not isinstance(schema, dict):
        return None
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"In context={at}, 'additionalProperties' is required to be supplied and to be false."
        missing = set(schema.get("properties", {})) - set(schema.get("required", []))
        if missing:
            keys = sorted(missing)
            return f"In context={at}, 'required' is required to be supplied and to include every key: {keys}."
    for key in ("properties", "$defs"):
        for name, sub in (schema.get(key) or {}).items():
            if problem := _strict_problem(sub, f"('{key}', '{name}')"):
                return problem
    for key in ("items", "anyOf"):
        subs = schema.get(key)
        for sub in subs if isinstance(subs, list) else [subs] if subs else []:
            if problem := _strict_problem(sub, f"('{key}',)"):
                return problem
    return None


def _image(url: str) -> tuple[bytes, float]:
    if not url.startswith("data:") or ";base64," not in url:
        raise _bad_request("Invalid image URL: only data URLs are accepted here.", "messages")
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            return data, float(ImageStat.Stat(img.convert("L")).mean[0])
    except (binascii.Error, UnidentifiedImageError, OSError):
        raise _bad_request(
            "You uploaded an unsupported image. Please make sure your image is valid."
        ) from None


class OpenAIStandin:
    """Fake OpenAI-compatible server on a daemon thread; a context manager like the Ollama one."""

    def __init__(
        self,
        models: Sequence[str] = DEFAULT_MODELS,
        *,
        api_key: str | None = "sk-standin",
        parallel: int = 4,
        latency: float = 0.0,
        supports_strict: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.models = set(models)
        self.api_key, self.latency, self.supports_strict = api_key, latency, supports_strict
        self.host, self.port = host, port
        self.requests: list[Seen] = []
        self.peak_concurrency = 0
        self._parallel, self._active, self._running = parallel, 0, 0
        self._cond = threading.Condition()
        self._faults: deque[int] = deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> OpenAIStandin:
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="openai-standin",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            with self._server.lock:
                for conn in self._server.connections:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> OpenAIStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, ending in /v1, as clients are configured with it."""
        return f"http://{self.host}:{self.port}/v1"

    def fail_next(self, status: int, count: int = 1) -> None:
        """The next `count` chat requests answer `status` (401, 404, 429 or 500) with the API's body."""
        with self._lock:
            self._faults.extend([status] * count)

    def _next_fault(self) -> int | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _enter(self) -> None:
        with self._cond:
            self._active += 1  # counted before the limit: a client that floods us is seen
            self.peak_concurrency = max(self.peak_concurrency, self._active)
            while self._running >= self._parallel:
                self._cond.wait()
            self._running += 1

    def _leave(self) -> None:
        with self._cond:
            self._active -= 1
            self._running -= 1
            self._cond.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], standin: OpenAIStandin) -> None:
        super().__init__(address, _Handler)
        self.standin = standin
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # like the servers it stands in for
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def handle(self) -> None:
        with self.server.lock:
            self.server.connections.add(self.connection)
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                super().handle()
        finally:
            with self.server.lock:
                self.server.connections.discard(self.connection)

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        key = self.server.standin.api_key
        given = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if key is None or given == key:
            return True
        masked = f"{given[:3]}***{given[-4:]}" if len(given) > 8 else given
        refused = _error(401, key=masked)
        self._json(refused.status, {"error": refused.error})
        return False

    def do_GET(self) -> None:
        """/v1/models."""
        if not self._authorized():
            return
        if self.path.split("?")[0] != "/v1/models":
            self._json(404, {"error": {"message": "Not found", "type": "invalid_request_error"}})
            return
        models = sorted(self.server.standin.models)
        rows = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "standin"} for m in models]
        self._json(200, {"object": "list", "data": rows})

    def do_POST(self) -> None:
        """/v1/chat/completions."""
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self._authorized():
            return
        if self.path.split("?")[0] != "/v1/chat/completions":
            self._json(404, {"error": {"message": "Not found", "type": "invalid_request_error"}})
            return
        try:
            self._chat(json.loads(raw))
        except _Refused as refused:
            self._json(refused.status, {"error": refused.error})
        except (ValueError, KeyError, TypeError) as exc:
            refused = _bad_request(f"We could not parse the JSON body of your request. ({exc})")
            self._json(refused.status, {"error": refused.error})

    def _chat(self, body: JSON) -> None:
        sd = self.server.standin
        model = str(body["model"])
        seen = self._understand(body)
        with sd._lock:
            sd.requests.append(seen)
        fault = sd._next_fault()
        if fault is not None:
            raise _error(fault, model=model)
        if model not in sd.models:
            raise _error(404, model=model)
        schema = self._schema(seen.response_format)
        sd._enter()
        try:
            time.sleep(sd.latency)
            request = ChatRequest(
                model=model,
                messages=seen.messages,
                format=schema,
                images=seen.images,
                brightness=seen.brightness,
                text=seen.text,
            )
            content = default_reply(request)
        finally:
            sd._leave()
        prompt_tokens = sum(len(json.dumps(m.get("content"))) for m in seen.messages) // 4 + 85 * len(
            seen.images
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content) // 4 + 1,
            "total_tokens": prompt_tokens + len(content) // 4 + 1,
        }
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        if seen.stream:
            self._stream(
                ident,
                created,
                model,
                content,
                usage,
                bool((body.get("stream_options") or {}).get("include_usage")),
            )
            return
        self._json(
            200,
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
                "system_fingerprint": "fp_standin",
            },
        )

    def _understand(self, body: JSON) -> Seen:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad_request("[] is too short - 'messages'", "messages")
        images, brightness, text = [], [], ""
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    if part.get("type") == "image_url":
                        data, light = _image(str(part["image_url"]["url"]))
                        images.append(data)
                        brightness.append(light)
                    elif part.get("type") == "text" and message.get("role") == "user":
                        text = str(part.get("text", ""))
            elif message.get("role") == "user":
                text = str(content or "")
        response_format = body.get("response_format")
        return Seen(
            model=str(body["model"]),
            messages=messages,
            response_format=response_format if isinstance(response_format, dict) else None,
            stream=bool(body.get("stream")),
            images=images,
            brightness=brightness,
            text=text,
        )

    def _schema(self, response_format: JSON | None) -> Any:
        if response_format is None or response_format.get("type") == "text":
            return None
        if response_format.get("type") == "json_object":
            return "json"
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema")
        if spec.get("strict"):
            if not self.server.standin.supports_strict:
                raise _bad_request("'strict' is not supported by this server", "response_format")
            problem = _strict_problem(schema)
            if problem:
                name = spec.get("name", "")
                raise _bad_request(
                    f"Invalid schema for response_format '{name}': {problem}", "response_format"
                )
        return schema

    def _stream(
        self, ident: str, created: int, model: str, content: str, usage: JSON, with_usage: bool
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def event(choices: list[JSON], extra: JSON | None = None) -> None:
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
            data = b"data: " + json.dumps({**chunk, "choices": choices, **(extra or {})}).encode() + b"\n\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        size = max(1, len(content) // 4)
        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i in range(0, len(content), size):
            event([{"index": 0, "delta": {"content": content[i : i + size]}, "finish_reason": None}])
        event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if with_usage:
            event([], {"usage": usage})
        done = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until Ctrl-C."""
    p = argparse.ArgumentParser(description="OpenAI-compatible stand-in server")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--api-key", default="sk-standin")
    a = p.parse_args(argv)
    with OpenAIStandin(api_key=a.api_key, parallel=a.parallel, latency=a.latency, port=a.port) as standin:
        print(f"OpenAI-compatible stand-in on {standin.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
