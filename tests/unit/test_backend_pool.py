"""The backend pool against real Ollama stand-ins, in process: health, hold, slots, routing."""

import asyncio
import logging
from collections.abc import Iterator

import pytest

from bridge.config.settings import OllamaSettings
from bridge.errors import BackendUnavailable
from bridge.pipeline.backend_pool import BackendPool, Member, NoBackend
from bridge.pipeline.ollama_backend import OllamaBackend
from tests.support.ollama_standin import OllamaStandin

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

    with caplog.at_level(logging.INFO, "bridge.pipeline.backend_pool"):
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


def test_the_backend_with_the_model_loaded_is_preferred(standins: list[OllamaStandin]) -> None:
    first, second = standins

    async def scenario() -> list[str]:
        pool = BackendPool([member("mini", first), member("pc", second)])
        second_alone = BackendPool([member("pc", second)])
        await second_alone.chat(["pc"], lambda _: MODEL, **ASK)  # loads the model on pc only
        await second_alone.close()
        pool.start()
        await until(lambda: pool.usable(["mini"]) and pool.health["pc"].loaded == [MODEL])
        chosen = [(await pool.chat(["mini", "pc"], lambda _: MODEL, **ASK))[0] for _ in range(3)]
        other = await pool.chat(["mini", "pc"], lambda _: "llama3.2:3b", **ASK)  # loaded nowhere
        await pool.close()
        return [*chosen, other[0]]

    assert asyncio.run(scenario()) == ["pc", "pc", "pc", "mini"]


def test_parallel_per_backend_is_never_exceeded(standins: list[OllamaStandin]) -> None:
    for standin in standins:
        standin.latency = 0.2

    async def scenario() -> dict[str, int]:
        pool = BackendPool([member("mini", standins[0], parallel=2), member("pc", standins[1], parallel=2)])
        replies = await asyncio.gather(
            *(pool.chat(["mini", "pc"], lambda _: MODEL, **ASK) for _ in range(20))
        )
        await pool.close()
        used: dict[str, int] = {}
        for name, _ in replies:
            used[name] = used.get(name, 0) + 1
        return used

    used = asyncio.run(scenario())
    assert sum(used.values()) == 20
    assert min(used.values()) >= 5  # both worked
    # The stand-ins allow 8 at once and count before their own limit: only the pool held back.
    assert [s.peak_concurrency for s in standins] == [2, 2]


def test_a_backend_that_dies_mid_request_hands_it_to_the_next(standins: list[OllamaStandin]) -> None:
    first, second = standins
    first.hang_next(30)

    async def scenario() -> str:
        pool = BackendPool([member("mini", first), member("pc", second)])
        pool.start()
        await until(lambda: pool.health["mini"].reachable is True and pool.health["pc"].reachable is True)
        asking = asyncio.create_task(pool.chat(["mini", "pc"], lambda _: MODEL, **ASK))
        await until(lambda: first.in_flight == 1)
        first.stop()
        name, reply = await asking
        assert reply.content == "echo: hello"
        assert pool.health["mini"].reachable is False
        await pool.close()
        return name

    assert asyncio.run(scenario()) == "pc"


def test_preload_goes_where_the_rules_job_would_go(standins: list[OllamaStandin]) -> None:
    """Not always the first Ollama: a backend that is down is passed over, and one that has the
    model in memory already is preferred, as the job's lease prefers it."""
    first, second = standins

    async def scenario() -> None:
        pool = BackendPool([member("mini", first), member("pc", second)], remind_every=0.0)
        pool.start()
        await until(lambda: pool.health["pc"].reachable is True and pool.health["mini"].reachable is True)
        first.stop()
        await pool.chat(["mini", "pc"], lambda _: MODEL, **ASK)  # finds mini gone, answers on pc
        second.stop()
        second.start()  # pc forgets its models: the next preload has to load one there
        await pool.preload(["mini", "pc"], lambda _: "llama3.2:3b", keep_alive="5m")
        assert "llama3.2:3b" in second.loaded
        first.start()
        pool.health["mini"].reachable = True  # as the health probe would find it
        pool.health["pc"].loaded = ["llama3.2:3b"]
        await pool.preload(["mini", "pc"], lambda _: "llama3.2:3b", keep_alive="5m")
        assert "llama3.2:3b" not in first.loaded  # pc has it: the job would go there
        await pool.preload(["mini", "pc"], lambda name: {"mini": "qwen2.5vl:3b"}.get(name, "qwen2.5:3b"))
        assert "qwen2.5vl:3b" in first.loaded  # neither has its model: the first reachable one
        await pool.close()

    asyncio.run(scenario())
