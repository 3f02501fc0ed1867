"""The threads that run the blocking Ollama client for the event loop."""

import asyncio
import threading
import time

import pytest

from bridge.pipeline.ollama_backend import Workers


def test_a_call_gives_its_result_or_its_exception() -> None:
    async def main() -> None:
        workers = Workers(1, "test")
        assert await workers.run(lambda: threading.current_thread().name) == "test-0"
        with pytest.raises(ValueError, match="bad"):
            await workers.run(lambda: int("bad"))
        workers.stop()

    asyncio.run(main())


def test_never_more_calls_at_once_than_threads_even_after_a_cancel() -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def call() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    async def main() -> None:
        workers = Workers(2, "test")
        first = asyncio.ensure_future(workers.run(call))
        await asyncio.sleep(0.01)
        first.cancel()  # its call still ends on its thread, holding it meanwhile
        await asyncio.gather(*(workers.run(call) for _ in range(6)))
        workers.stop()

    asyncio.run(main())
    assert peak == 2


def test_a_call_given_up_on_before_a_thread_took_it_is_never_made() -> None:
    made: list[str] = []
    release = threading.Event()

    async def main() -> None:
        workers = Workers(1, "test")
        busy = asyncio.ensure_future(workers.run(release.wait))
        waiting = asyncio.ensure_future(workers.run(lambda: made.append("late")))
        await asyncio.sleep(0.05)
        waiting.cancel()  # its deadline passed while the only thread was busy
        await asyncio.sleep(0.01)
        release.set()
        await busy
        await workers.run(lambda: made.append("next"))
        workers.stop()

    asyncio.run(main())
    assert made == ["next"]
