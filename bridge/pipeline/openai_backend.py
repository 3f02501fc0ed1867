"""An OpenAI-compatible backend (LM Studio, llama.cpp server, vLLM, hosted providers), through
the `openai` package.

It takes the same requests as the Ollama backend: Ollama-style messages (images as raw bytes
become data URLs), the handler's JSON Schema (sent as `response_format` json_schema, strict
where the server accepts it; a server that refuses strict schemas is asked without, and the
handler validates and re-asks as with Ollama), token counts and timings into the reply.
"""

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import openai

from bridge.config.settings import OpenAIBackendSettings
from bridge.errors import BackendDown, BackendError, BackendUnavailable, ModelNotFound
from bridge.pipeline.ollama_backend import LlmReply, retrying

log = logging.getLogger(__name__)

_MIME = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png", b"RIFF": "image/webp"}


class OpenAIBackend:
    """One OpenAI-compatible server. Safe to share between all workers of one event loop."""

    def __init__(
        self,
        settings: OpenAIBackendSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.url = settings.base_url.rstrip("/")
        key = settings.api_key.get_secret_value() if settings.api_key is not None else "none"
        self._client = openai.AsyncOpenAI(
            base_url=self.url,
            api_key=key,
            # The deadline per request is ours (asyncio.timeout); the client only bounds the connect.
            timeout=openai.Timeout(None, connect=settings.connect_timeout),
            max_retries=0,  # retries are ours: with backoff, and never for the job's own faults
        )
        self._slots = asyncio.Semaphore(settings.parallel)
        self._sleep = sleep
        self._loose: set[str] = set()  # models whose server refused a strict schema
        self.calls = 0

    async def chat(
        self,
        *,
        model: str,
        messages: Sequence[dict[str, Any]],
        schema: dict[str, Any] | None,
        options: dict[str, Any] | None = None,
        keep_alive: str | float | None = None,
        deadline: float | None = None,
    ) -> LlmReply:
        """One structured chat request, retried on transient faults of the server."""
        converted = [_message(m) for m in messages]
        temperature = float((options or {}).get("temperature", 0))
        deadline = deadline or self.settings.timeout
        s = self.settings
        async with self._slots:
            return await retrying(
                lambda: self._once(model, converted, schema, temperature, deadline),
                s.retries,
                s.retry_backoff,
                self._sleep,
            )

    async def _once(
        self,
        model: str,
        messages: list[dict[str, Any]],
        schema: dict[str, Any] | None,
        temperature: float,
        deadline: float,
    ) -> LlmReply:
        request: dict[str, Any] = {"model": model, "messages": messages, "temperature": temperature}
        if schema is not None:
            closed = _closed(schema) if self.settings.strict and model not in self._loose else None
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": closed or schema, "strict": closed is not None},
            }
        started = time.perf_counter()
        self.calls += 1
        try:
            async with asyncio.timeout(deadline):
                if self.settings.stream:
                    content, usage, extra = await self._streamed(request)
                else:
                    response = await self._client.chat.completions.create(**request)
                    content = response.choices[0].message.content or "" if response.choices else ""
                    usage, extra = response.usage, response.model_extra or {}
        except TimeoutError:
            raise BackendUnavailable(
                f"{self.url} did not answer within {deadline:.0f}s (raise the backend's or the rule's "
                "timeout, or use a smaller model)",
                retry_now=False,
            ) from None
        except openai.BadRequestError as exc:
            if schema is not None and self._refused_strict(exc, model):
                return await self._once(model, messages, schema, temperature, deadline)
            raise BackendError(f"{self.url} refused the request (400): {_detail(exc)}") from None
        except openai.APIStatusError as exc:
            raise self._translate(exc, model) from None
        except openai.APIConnectionError:
            raise BackendDown(
                f"cannot reach {self.url}: check that the server is running and the base_url is right"
            ) from None
        wall_ms = (time.perf_counter() - started) * 1000
        found = extra.get("timings")
        timings: dict[str, Any] = found if isinstance(found, dict) else {}
        return LlmReply(
            content=content,
            model=model,
            load_ms=0.0,
            prompt_ms=float(timings.get("prompt_ms") or 0.0),  # llama.cpp's server reports these
            eval_ms=float(timings.get("predicted_ms") or 0.0),
            total_ms=wall_ms,
            prompt_tokens=usage.prompt_tokens if usage is not None else 0,
            eval_tokens=usage.completion_tokens if usage is not None else 0,
            wall_ms=wall_ms,
        )

    async def _streamed(self, request: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
        pieces: list[str] = []
        usage: Any = None
        extra: dict[str, Any] = {}
        stream = await self._client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        )
        async for chunk in stream:
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
            extra.update(chunk.model_extra or {})
        return "".join(pieces), usage, extra

    def _refused_strict(self, exc: openai.BadRequestError, model: str) -> bool:
        """A server that cannot do strict schemas: ask it without, from now on, once."""
        text = _detail(exc).lower()
        if model in self._loose or not self.settings.strict:
            return False
        if not any(word in text for word in ("strict", "response_format", "json_schema", "schema")):
            return False
        log.info("%s refused a strict schema for %s (%s); asking without strict", self.url, model, text)
        self._loose.add(model)
        return True

    def _translate(self, exc: openai.APIStatusError, model: str) -> BackendError:
        status, detail = exc.status_code, _detail(exc)
        if status in (401, 403):
            return BackendError(f"{self.url} refused the API key ({status}): {detail} (check api_key)")
        if status == 404:
            return ModelNotFound(f"model '{model}' not found at {self.url}: {detail}")
        if status == 429:
            return BackendUnavailable(f"{self.url} is rate limiting: {detail}", job_fault=False)
        if status in (502, 504):
            return BackendDown(f"{self.url} is not there: HTTP {status} from a proxy")
        if status == 503:
            return BackendUnavailable(f"{self.url} is busy: {detail}", job_fault=False)
        if status >= 500:
            return BackendUnavailable(f"{self.url} failed while answering ({status}): {detail}")
        return BackendError(f"{self.url} refused the request ({status}): {detail}")

    async def models(self) -> list[str]:
        """The models the server offers (`/models`)."""
        try:
            async with asyncio.timeout(self.settings.connect_timeout * 2):
                page = await self._client.models.list()
        except (openai.APIConnectionError, TimeoutError):
            raise BackendDown(f"cannot reach {self.url}") from None
        except openai.APIStatusError as exc:
            raise self._translate(exc, "") from None
        return [m.id for m in page.data]

    async def probe(self) -> list[str]:
        """Nothing is 'loaded' on such a server; BackendDown unless `/models` answers."""
        try:
            await self.models()
        except BackendDown:
            raise
        except BackendError as exc:
            raise BackendDown(str(exc)) from None
        return []

    async def close(self) -> None:
        await self._client.close()


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """An Ollama-style message (`images`: raw bytes) as an OpenAI one (image parts, data URLs)."""
    images = message.get("images") or []
    if not images:
        return {"role": message["role"], "content": message.get("content", "")}
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.get("content", "")}]
    for image in images:
        data = image if isinstance(image, bytes) else base64.b64decode(image)
        mime = next((m for magic, m in _MIME.items() if data.startswith(magic)), "image/jpeg")
        url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    return {"role": message["role"], "content": parts}


def _closed(schema: Any) -> Any:
    """The schema in strict form (every object closed with `additionalProperties: false`), or
    None when strict mode would change its meaning (an object with optional properties)."""
    if isinstance(schema, list):
        items = [_closed(item) for item in schema]
        return None if any(item is None for item in items) else items
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            inner = {name: _closed(sub) for name, sub in value.items()}
            if any(sub is None for sub in inner.values()):
                return None
            out[key] = inner
        elif key in ("items", "anyOf", "allOf", "oneOf"):
            if (converted := _closed(value)) is None:
                return None
            out[key] = converted
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out:
        if set(out.get("properties", {})) - set(out.get("required", [])):
            return None
        out.setdefault("additionalProperties", False)
    return out


def _detail(exc: openai.APIStatusError) -> str:
    """The server's own message, from an OpenAI-style `{"error": {"message": …}}` body."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(exc.message)
