"""The OpenAI-compatible backend against the project's stand-in, over real HTTP, in process."""

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest

from bridge.config.loader import rule_adapter
from bridge.config.rules import RuleBase
from bridge.config.settings import OpenAIBackendSettings
from bridge.errors import BackendDown, BackendError, BackendUnavailable, ModelNotFound
from bridge.pipeline.backend_pool import BackendPool, Member
from bridge.pipeline.openai_backend import OpenAIBackend
from bridge.pipeline.runner import ask_model
from handlers import PromptInput, handler_for
from tests.support.mqtt_helpers import free_port
from tests.support.openai_standin import OpenAIStandin
from tests.support.samples import jpeg

LOCK: dict[str, Any] = {
    "name": "front_door_lock",
    "handler": "yes_no",
    "model": "qwen2.5-vl-7b-instruct",
    "prompt": "Is the thumb-turn in the locked position?",
    "labels": {"true": "locked", "false": "unlocked"},
}


@pytest.fixture
def standin() -> Iterator[OpenAIStandin]:
    with OpenAIStandin() as server:
        yield server


def backend(url: str, **settings: Any) -> OpenAIBackend:
    values = {"type": "openai", "base_url": url, "api_key": "sk-standin", "retries": 0, **settings}
    return OpenAIBackend(OpenAIBackendSettings.model_validate(values))


def lock_rule() -> RuleBase:
    return rule_adapter().validate_python(LOCK)  # type: ignore[no-any-return]


def ask(server: OpenAIBackend, image: bytes | None, text: str | None = None) -> Any:
    async def run() -> Any:
        pool = BackendPool([Member("cloud", server, kind="openai", parallel=2, local=False)])
        try:
            rule = lock_rule()
            prompt = PromptInput(text=text, image=image)
            return await ask_model(pool, handler_for(rule), rule, prompt, backends=["cloud"])
        finally:
            await pool.close()

    return asyncio.run(run())


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_image_goes_as_a_data_url_and_decides_the_answer(standin: OpenAIStandin, stream: bool) -> None:
    bright = ask(backend(standin.url, stream=stream), jpeg(230))
    dark = ask(backend(standin.url, stream=stream), jpeg(20))
    assert (bright.answer.fields["answer"], dark.answer.fields["answer"]) == (True, False)
    assert bright.backend == "cloud"
    seen = standin.requests[-1]
    assert seen.stream is stream
    assert seen.images[0][:3] == b"\xff\xd8\xff"  # the JPEG arrived whole
    part = seen.messages[1]["content"][1]
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert seen.response_format is not None
    assert seen.response_format["json_schema"]["strict"] is True  # the handler's schema, closed
    assert seen.response_format["json_schema"]["schema"]["additionalProperties"] is False
    assert len(standin.requests) == 2  # no request was refused
    reply = bright.replies[-1]
    assert reply.prompt_tokens > 85  # the image is counted
    assert reply.eval_tokens > 0
    assert reply.wall_ms > 0


def test_strict_schema_where_supported_and_asked_without_where_not(standin: OpenAIStandin) -> None:
    standin.supports_strict = False
    outcome = ask(backend(standin.url), jpeg(230))
    assert outcome.answer.fields["answer"] is True
    formats = [r.response_format for r in standin.requests]
    assert formats[0] is not None
    assert formats[0]["json_schema"]["strict"] is True
    assert formats[-1] is not None
    assert formats[-1]["json_schema"]["strict"] is False  # remembered for this model
    before = len(standin.requests)
    ask_again = ask(backend(standin.url, strict=False), jpeg(20))
    assert ask_again.answer.fields["answer"] is False
    assert len(standin.requests) == before + 1


@pytest.mark.parametrize(
    ("status", "error", "words", "job_fault"),
    [
        (401, BackendError, "refused the API key (401): Incorrect API key", None),
        (404, ModelNotFound, "does not exist or you do not have access", None),
        (429, BackendUnavailable, "rate limiting: Rate limit reached", False),
        (500, BackendUnavailable, "The server had an error", True),
    ],
)
def test_errors_carry_the_servers_words(
    standin: OpenAIStandin, status: int, error: type[Exception], words: str, job_fault: bool | None
) -> None:
    standin.fail_next(status)
    with pytest.raises(error, match=re.escape(words)) as raised:
        ask(backend(standin.url), jpeg(230))
    if job_fault is not None:
        assert getattr(raised.value, "job_fault", None) is job_fault


def test_wrong_key_and_missing_server(standin: OpenAIStandin) -> None:
    with pytest.raises(BackendError, match="Incorrect API key provided: sk-\\*\\*\\*"):
        ask(backend(standin.url, api_key="sk-wrong-key"), None, "hello")

    async def nothing_there() -> None:
        server = backend(f"http://127.0.0.1:{free_port()}/v1", connect_timeout=1)
        try:
            with pytest.raises(BackendDown, match="cannot reach"):
                await server.probe()
        finally:
            await server.close()

    asyncio.run(nothing_there())


def test_models_lists_what_the_server_offers(standin: OpenAIStandin) -> None:
    async def run() -> list[str]:
        server = backend(standin.url)
        try:
            assert await server.probe() == []  # nothing is "loaded" on such a server
            return await server.models()
        finally:
            await server.close()

    assert asyncio.run(run()) == ["gpt-4o-mini", "qwen2.5-vl-7b-instruct"]
