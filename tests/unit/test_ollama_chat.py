"""The chat request written straight onto the transport: what goes on the wire, and what comes
back, against the Ollama stand-in and against raw servers that answer as a proxy might."""

import asyncio
import base64
import io
import json

import ollama
import pytest
from PIL import Image

from bridge.config.settings import OllamaSettings
from bridge.errors import BackendError
from bridge.pipeline.ollama_backend import OllamaBackend
from bridge.pipeline.ollama_chat import ChatAnswerInvalid, OllamaChat
from tests.support.ollama_standin import OllamaStandin
from tests.unit.test_http_transport import RawServer, run

MODEL = "qwen2.5vl:7b"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(out, "JPEG")
    return out.getvalue()


def test_a_structured_answer_with_an_image_from_the_standin() -> None:
    picture = _jpeg((250, 250, 250))

    async def main(url: str) -> None:
        chat = OllamaChat(url, connect_timeout=2, max_idle=1)
        try:
            for text in ("milk", "牛乳"):
                reply = await chat.chat(
                    model=MODEL,
                    messages=[{"role": "user", "content": text, "images": [picture]}],
                    format=SCHEMA,
                    options={"temperature": 0},
                    keep_alive="5m",
                )
                assert isinstance(reply, ollama.ChatResponse)
                assert json.loads(reply.message.content or "")["answer"]
                assert reply.done
                assert reply.eval_count
            with pytest.raises(ollama.ResponseError) as missing:
                await chat.chat(
                    model="nope:1b",
                    messages=[{"role": "user", "content": "x"}],
                    format=None,
                    options={},
                    keep_alive=None,
                )
            assert missing.value.status_code == 404
            assert "not found" in missing.value.error  # Ollama's JSON error body, read by the package
        finally:
            await chat.aclose()

    with OllamaStandin([MODEL]) as standin:
        asyncio.run(main(standin.url))
        assert [r.text for r in standin.requests] == ["milk", "牛乳"]
        assert [r.images for r in standin.requests] == [
            [picture],
            [picture],
        ]  # base64 on the wire, decoded there


def _answering(status: bytes, headers: bytes, body: bytes) -> RawServer:
    async def answer(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        while await server.read_request(reader) is not None:
            writer.write(
                b"HTTP/1.1 " + status + b"\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            await writer.drain()

    return RawServer(answer)


def test_the_request_on_the_wire_keeps_the_urls_path_and_credentials() -> None:
    ok = json.dumps(
        {
            "model": MODEL,
            "created_at": "2026-12-03T00:00:00Z",
            "message": {"role": "assistant", "content": "{}"},
            "done": True,
        }
    ).encode()

    async def main() -> None:
        async with _answering(b"200 OK", b"Content-Type: application/json\r\n", ok) as server:
            url = server.url.replace("http://", "http://me:s%40cret@") + "/ollama/"
            chat = OllamaChat(url, connect_timeout=2, max_idle=1)
            for _ in range(2):
                await chat.chat(
                    model=MODEL,
                    messages=[{"role": "user", "content": "牛乳", "images": []}],
                    format=SCHEMA,
                    options={"temperature": 0},
                    keep_alive=None,
                )
            await chat.aclose()
            assert server.connections == 1  # kept alive between the two
            head, _, body = server.requests[0].partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            assert lines[0] == b"POST /ollama/api/chat HTTP/1.1"
            fields = dict(line.split(b": ", 1) for line in lines[1:])
            assert fields[b"Host"] == server.url.removeprefix("http://").encode()
            assert fields[b"Authorization"] == b"Basic " + base64.b64encode(b"me:s@cret")
            assert fields[b"Content-Type"] == b"application/json"
            assert int(fields[b"Content-Length"]) == len(body)
            assert json.loads(body) == {
                "model": MODEL,
                "messages": [{"role": "user", "content": "牛乳"}],
                "stream": False,
                "format": SCHEMA,
                "options": {"temperature": 0},
            }

    run(main())


def test_the_api_key_of_the_environment_is_sent_as_the_client_sends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", "k-123")

    async def main() -> None:
        async with _answering(b"404 Not Found", b"", b'{"error":"model \\"x\\" not found"}') as server:
            chat = OllamaChat(server.url, connect_timeout=2, max_idle=1)
            with pytest.raises(ollama.ResponseError):
                await chat.chat(
                    model="x",
                    messages=[{"role": "user", "content": "x"}],
                    format=None,
                    options={},
                    keep_alive=None,
                )
            await chat.aclose()
            assert b"\r\nAuthorization: Bearer k-123\r\n" in server.requests[0]

    run(main())


@pytest.mark.parametrize(
    ("status", "headers", "body", "says"),
    [
        (
            b"307 Temporary Redirect",
            b"Location: https://ollama.lan/api/chat\r\n",
            b"",
            "refused the request (307): redirected to https://ollama.lan/api/chat: set ollama.url",
        ),
        (
            b"200 OK",
            b"Content-Type: text/html\r\n",
            b"<html>captive portal</html>",
            "did not answer like Ollama: HTTP 200 with a body that is not a chat answer",
        ),
    ],
)
def test_a_proxys_answer_that_is_not_ollamas_fails_the_job_with_what_to_do(
    status: bytes, headers: bytes, body: bytes, says: str
) -> None:
    async def main() -> None:
        async with _answering(status, headers, body) as server:
            backend = OllamaBackend(OllamaSettings(url=server.url, retries=0))
            with pytest.raises(BackendError) as failed:
                await backend.chat(model=MODEL, messages=[{"role": "user", "content": "x"}], schema=SCHEMA)
            await backend.close()
            assert says in str(failed.value)

    run(main())


def test_chat_answer_invalid_is_raised_by_the_chat_path_itself() -> None:
    async def main() -> None:
        async with _answering(b"200 OK", b"", b'{"not": "a chat answer"') as server:
            chat = OllamaChat(server.url, connect_timeout=2, max_idle=1)
            with pytest.raises(ChatAnswerInvalid, match="it begins"):
                await chat.chat(
                    model=MODEL,
                    messages=[{"role": "user", "content": "x"}],
                    format=None,
                    options={},
                    keep_alive=None,
                )
            await chat.aclose()

    run(main())
