"""The backend pool against real Ollama stand-ins, in process: health, hold, slots, routing."""

import asyncio
import logging
from collections.abc import Iterator

import pytest

from bridge.backend_pool import BackendPool, Member, NoBackend
from bridge.config import OllamaSettings
from bridge.errors import BackendUnavailable
from bridge.ollama_backend import OllamaBackend
from tests.ollama_standin import OllamaStandin

MODEL = "qwen2.5:3b"
ASK = {"messages": [{"role": "user", "content": "hello"}], "schema": None}


@pytest.fixture
def standins() -> Iterator[list[OllamaStandin]]:
    servers = [OllamaStandin(parallel=8).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def member(name: str, standin: OllamaStandin, parallel: int = 1, local: bool = True) -> Member:
    settings = OllamaSettings(url=standin.url, parallel=parallel, retries=0, connect_timeout=1, timeout=10)
    return Member(name, OllamaBackend(settings), parallel=parallel, local=local)


async def until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_held_jobs_are_released_when_the_backend_answers_again(
    standins: list[OllamaStandin], caplog: pytest.LogCaptureFixture
) -> None:
    standin = standins[0]

    async def scenario() -> None:
        changes: list[bool | None] = []
        pool = BackendPool(
            [member("ollama", standin)], on_change=lambda: changes.append(None), remind_every=0.0
        )
        pool.start()
        await until(lambda: pool.health["ollama"].reachable is True)
        standin.stop()
        with pytest.raises(NoBackend) as waiting:
            await pool.chat(["ollama"], lambda _: MODEL, **ASK)
        assert waiting.value.names == ("ollama",)
        assert not waiting.value.job_fault
        health = pool.payload()["ollama"]
        assert health["reachable"] is False
        assert "cannot reach Ollama" in health["last_error"]
        released: list[str] = []
        pool.hold(["ollama"], lambda: released.append("job"))
        assert pool.held == 1
        assert not released
        await asyncio.sleep(1.0)  # a probe or two fail: the reminder (every 0 s here) is logged
        standin.start()
        await until(lambda: released == ["job"])
        assert pool.health["ollama"].reachable is True
        assert pool.held == 0
        name, reply = await pool.chat(["ollama"], lambda _: MODEL, **ASK)
        assert (name, reply.content) == ("ollama", "echo: hello")
        assert len(changes) >= 3  # up, down, up
        await pool.close()

    with caplog.at_level(logging.INFO, "bridge.backend_pool"):
        asyncio.run(scenario())
    text = caplog.text
    assert text.count("backend 'ollama' unreachable") == 1
    assert "still waiting for Ollama at http://127.0.0.1:" in text
    assert "answers again after" in text


def test_a_fault_while_the_server_still_answers_is_the_jobs(standins: list[OllamaStandin]) -> None:
    standin = standins[0]

    async def scenario() -> None:
        pool = BackendPool([member("ollama", standin)])
        standin.fail_next(500)
        with pytest.raises(BackendUnavailable, match="runner process has terminated") as failed:
            await pool.chat(["ollama"], lambda _: MODEL, **ASK)
        assert failed.value.job_fault
        assert pool.health["ollama"].reachable is not False
        await pool.close()

    asyncio.run(scenario())
