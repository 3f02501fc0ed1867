"""CPU per chat request of the ways the bridge could call Ollama: `python -m bench.transport`.

Each way makes the same structured, non-streamed chat request to the Ollama stand-in (its own
process, answering at once) one after another, and this process's CPU time is divided by the
requests made. Ways, in a rotated order per round, median and min over the rounds:

- `thread`: the blocking `ollama.Client` on one thread, awaited from the event loop (the
  bridge's way before `bridge.pipeline.http_transport`);
- `async_httpx`: `ollama.AsyncClient` on httpx's default transport (httpcore over anyio);
- `keepalive`: `ollama.AsyncClient` on `KeepAliveTransport` (the bridge's way before
  `bridge.pipeline.ollama_chat`);
- `direct`: `OllamaChat`, the request written straight onto `KeepAliveTransport` and the
  answer read as the package's `ChatResponse` (the bridge's way now).
"""

import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ollama

from bench.common import env_note, median
from bridge.pipeline.http_transport import KeepAliveTransport
from bridge.pipeline.ollama_chat import OllamaChat

MODEL = "qwen2.5vl:7b"
MESSAGES = [{"role": "user", "content": "牛乳きれてた"}]
SCHEMA = {"type": "object", "properties": {"task": {"type": "string"}}, "required": ["task"]}
WAYS = ("thread", "async_httpx", "keepalive", "direct")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _per_call(way: str, url: str, calls: int) -> float:
    """Seconds of CPU per request, after 50 requests to warm the connection up."""
    kwargs: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "format": SCHEMA, "stream": False}
    closing: Callable[[], Awaitable[None]]
    if way == "thread":
        blocking = ollama.Client(host=url)
        pool = ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()

        async def call() -> Any:
            return await loop.run_in_executor(pool, lambda: blocking.chat(**kwargs))

        async def closing() -> None:
            pool.shutdown()
            blocking._client.close()
    elif way == "direct":
        direct = OllamaChat(url, connect_timeout=5.0, max_idle=1)

        async def call() -> Any:
            return await direct.chat(
                model=MODEL, messages=MESSAGES, format=SCHEMA, options={}, keep_alive=None
            )

        closing = direct.aclose
    else:
        transport = KeepAliveTransport() if way == "keepalive" else None
        client = ollama.AsyncClient(host=url, transport=transport)

        async def call() -> Any:
            return await client.chat(**kwargs)

        async def closing() -> None:
            await client._client.aclose()

    for _ in range(50):
        await call()
    before = _cpu()
    for _ in range(calls):
        reply = await call()
    spent = _cpu() - before
    assert json.loads(reply.message.content)["task"], reply
    await closing()
    return spent / calls


def transport(calls: int = 2000, rounds: int = 5) -> dict[str, Any]:
    standin = subprocess.Popen(
        [sys.executable, "-m", "tests.support.ollama_standin", "--port", "0", "--models", MODEL],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert standin.stdout is not None
        url = standin.stdout.readline().rsplit(" ", 1)[-1].strip()
        spent: dict[str, list[float]] = {way: [] for way in WAYS}
        started = time.monotonic()
        for round_ in range(rounds):
            for way in WAYS[round_ % len(WAYS) :] + WAYS[: round_ % len(WAYS)]:
                spent[way].append(asyncio.run(_per_call(way, url, calls)))
    finally:
        standin.terminate()
        standin.wait(10)
    ms = {
        way: {"median": round(median(s) * 1000, 3), "min": round(min(s) * 1000, 3)}
        for way, s in spent.items()
    }
    return {
        "bench": "transport",
        "calls": calls,
        "rounds": rounds,
        "cpu_ms_per_call": ms,
        "keepalive_over_thread": round(median(spent["keepalive"]) / median(spent["thread"]), 3),
        "keepalive_over_async_httpx": round(median(spent["keepalive"]) / median(spent["async_httpx"]), 3),
        "direct_over_keepalive": round(median(spent["direct"]) / median(spent["keepalive"]), 3),
        "seconds": round(time.monotonic() - started, 1),
        "env": env_note(),
    }


if __name__ == "__main__":
    print(json.dumps(transport(*(int(a) for a in sys.argv[1:3]))))
