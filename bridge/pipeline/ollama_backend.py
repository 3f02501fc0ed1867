"""The LLM backend: Ollama, chat requests on a lean path, the rest through the `ollama` client.

It owns what the model host needs: at most `parallel` requests in flight (Ollama would only
queue more), a deadline per request (the client has none by default), retries with backoff on
faults worth retrying, and errors a person can act on.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import ollama

from bridge.config.redact import redact_url
from bridge.config.settings import OllamaSettings
from bridge.errors import BackendDown, BackendError, BackendUnavailable, ModelNotFound
from bridge.pipeline.ollama_chat import ChatAnswerInvalid, OllamaChat

log = logging.getLogger(__name__)

_NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class LlmReply:
    """The model's answer with Ollama's own timings (ms) and token counts."""

    content: str
    model: str
    load_ms: float
    prompt_ms: float
    eval_ms: float
    total_ms: float
    prompt_tokens: int
    eval_tokens: int
    wall_ms: float


class OllamaBackend:
    """One Ollama host. Safe to share between all workers of one event loop."""

    def __init__(
        self,
        settings: OllamaSettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.url = redact_url(settings.url.rstrip("/"))  # as logs and error messages show it
        self._client = ollama.AsyncClient(
            host=settings.url.rstrip("/"),
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
        )
        # Chat requests, the hot path, go straight onto a lean keep-alive transport
        # (bridge.pipeline.ollama_chat). Their deadline is the job's (asyncio.timeout below),
        # which closes the connection of a request given up on, so Ollama stops generating.
        # The client above keeps httpx's transport: /api/pull streams its progress.
        self._chat = OllamaChat(
            settings.url.rstrip("/"), connect_timeout=settings.connect_timeout, max_idle=settings.parallel
        )
        self._slots = asyncio.Semaphore(settings.parallel)
        self._sleep = sleep
        self.in_flight = 0
        self.calls = 0
        self._health: dict[str, Any] = {}
        self._health_at = -float("inf")
        self.reachable: bool | None = None  # None until the first request says

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
        """One structured chat request, retried on transient faults."""
        opts = {"temperature": 0, **(options or {})}
        deadline = deadline or self.settings.timeout
        async with self._slots:
            self.in_flight += 1
            try:
                return await self._retrying(
                    lambda: self._chat_once(model, messages, schema, opts, keep_alive, deadline)
                )
            finally:
                self.in_flight -= 1

    async def _retrying(self, call: Callable[[], Awaitable[LlmReply]]) -> LlmReply:
        try:
            reply = await retrying(call, self.settings.retries, self.settings.retry_backoff, self._sleep)
        except BackendUnavailable:
            self.reachable = False
            raise
        self.reachable = True
        return reply

    async def _chat_once(
        self,
        model: str,
        messages: Sequence[dict[str, Any]],
        schema: dict[str, Any] | None,
        options: dict[str, Any],
        keep_alive: str | float | None,
        deadline: float,
    ) -> LlmReply:
        started = time.perf_counter()
        self.calls += 1
        try:
            async with asyncio.timeout(deadline):
                # One answer in one body: streamed, every token would be a line to read,
                # parse and validate, which cost more CPU than the rest of the job.
                final = await self._chat.chat(
                    model=model,
                    messages=messages,
                    format=schema,
                    options=options,
                    keep_alive=keep_alive if keep_alive is not None else self.settings.keep_alive,
                )
        except (TimeoutError, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            raise BackendUnavailable(
                f"Ollama at {self.url} did not answer within {deadline:.0f}s "
                "(raise ollama.timeout or the rule's timeout, or use a smaller model)",
                retry_now=False,
            ) from None
        except ollama.ResponseError as exc:
            raise self._translate(exc, model) from None
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise self._unreachable() from None
        except httpx.TransportError as exc:
            raise BackendUnavailable(
                f"the connection to Ollama at {self.url} broke off mid-answer ({type(exc).__name__})"
            ) from None
        except ChatAnswerInvalid as exc:
            raise BackendError(f"{self.url} did not answer like Ollama: {exc}") from None
        return LlmReply(
            content=final.message.content or "",
            model=final.model or model,
            load_ms=(final.load_duration or 0) / _NS_PER_MS,
            prompt_ms=(final.prompt_eval_duration or 0) / _NS_PER_MS,
            eval_ms=(final.eval_duration or 0) / _NS_PER_MS,
            total_ms=(final.total_duration or 0) / _NS_PER_MS,
            prompt_tokens=final.prompt_eval_count or 0,
            eval_tokens=final.eval_count or 0,
            wall_ms=(time.perf_counter() - started) * 1000,
        )

    def _unreachable(self) -> BackendDown:
        return BackendDown(
            f"cannot reach Ollama at {self.url}: check that it is running and accessible "
            "from this machine (ollama.url in config.yaml, or LLM2MQTT_OLLAMA_URL)"
        )

    def _translate(self, exc: ollama.ResponseError, model: str) -> BackendError:
        if exc.status_code == 404:
            return ModelNotFound(
                f"model '{model}' not found on Ollama at {self.url}: run `ollama pull {model}`"
            )
        if exc.status_code in (502, 504):
            # A proxy in front of Ollama answers, Ollama behind it does not.
            return BackendDown(f"Ollama at {self.url} is not there: HTTP {exc.status_code} from a proxy")
        if exc.status_code == 503:
            return BackendUnavailable(f"Ollama at {self.url} is busy: {exc.error}", job_fault=False)
        if exc.status_code == -1 or exc.status_code >= 500:
            return BackendUnavailable(f"Ollama failed while answering: {exc.error}")
        return BackendError(f"Ollama refused the request ({exc.status_code}): {exc.error}")

    async def models(self) -> list[str]:
        """Names of the pulled models (`/api/tags`)."""
        try:
            listing = await self._client.list()
        except (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout):
            # Other transport errors (a port that is not HTTP) stay what they are: check --live
            # names them as such.
            raise self._unreachable() from None
        except ollama.ResponseError as exc:
            raise self._translate(exc, "") from None
        return [m.model for m in listing.models if m.model]

    async def loaded(self) -> list[str]:
        """Names of the models in memory now (`/api/ps`)."""
        try:
            async with asyncio.timeout(self.settings.connect_timeout * 2):
                running = await self._client.ps()
        except (ConnectionError, httpx.TransportError, TimeoutError):
            self.reachable = False
            raise self._unreachable() from None
        except ollama.ResponseError as exc:
            self.reachable = False
            raise self._translate(exc, "") from None
        self.reachable = True
        return [m.model for m in running.models if m.model]

    async def probe(self) -> list[str]:
        """The loaded models; BackendDown when no working Ollama answers (any error status)."""
        try:
            return await self.loaded()
        except BackendDown:
            raise
        except BackendError as exc:
            raise BackendDown(str(exc)) from None

    async def health(self, max_age: float = 5.0) -> dict[str, Any]:
        """Reachable or not, the loaded models and the last error; asked at most every `max_age`."""
        if time.monotonic() - self._health_at > max_age:
            try:
                self._health = {"reachable": True, "loaded": sorted(await self.loaded())}
            except BackendError as exc:
                self._health = {"reachable": False, "loaded": [], "error": str(exc)}
            self._health_at = time.monotonic()
        return {"name": "ollama", "in_flight": self.in_flight, **self._health}

    async def pull(self, model: str) -> AsyncIterator[dict[str, Any]]:
        """Pull `model` (`/api/pull`), yielding Ollama's progress lines (status, completed, total)."""
        try:
            stream = await self._client.pull(model, stream=True)
            async for part in stream:
                yield part.model_dump(exclude_none=True)
        except (ConnectionError, httpx.TransportError):
            raise self._unreachable() from None
        except ollama.ResponseError as exc:
            raise BackendError(f"Ollama could not pull {model!r}: {exc.error}") from None

    async def close(self) -> None:
        await self._client._client.aclose()  # the ollama client exposes no close of its own
        await self._chat.aclose()


async def retrying(
    call: Callable[[], Awaitable[LlmReply]],
    retries: int,
    backoff: float,
    sleep: Callable[[float], Awaitable[None]],
) -> LlmReply:
    """`call`, again up to `retries` times on a transient fault worth an immediate retry, the
    pause doubling from `backoff`. Nobody there (BackendDown) or a timeout is not retried here:
    the pool probes and holds, or the job runs again later; asking at once would only keep a slot."""
    delay = backoff
    for attempt in range(retries + 1):
        try:
            return await call()
        except BackendUnavailable as exc:
            if attempt == retries or not exc.retry_now:
                raise
            log.warning("%s; retrying in %.1fs", exc, delay)
            await sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def has_model(pulled: Sequence[str], model: str) -> bool:
    """Whether `model` is among Ollama's pulled models (a name without tag means :latest)."""
    wanted = model if ":" in model else f"{model}:latest"
    return wanted in pulled or model in pulled
