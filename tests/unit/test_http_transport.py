"""The chat requests' HTTP/1.1 transport, against servers that answer in each way HTTP allows."""

import asyncio
import ipaddress
import json
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from bridge.pipeline.http_transport import KeepAliveTransport
from tests.support.certs import certificates
from tests.support.ollama_standin import OllamaStandin

Answer = Callable[["RawServer", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """A TCP server whose every connection runs `answer`; counts connections and their ends."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.closed_by_client = 0
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> "RawServer":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.answer(self, reader, writer, self.connections)
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed_by_client += 1
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=KeepAliveTransport(), timeout=httpx.Timeout(2.0))


def test_answers_by_length_chunked_and_close_and_one_connection_for_many() -> None:
    bodies = [b'{"a": 1}', b'{"b": 2}']

    async def answer(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        while await server.read_request(reader) is not None:
            if len(server.requests) == 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n" + bodies[0])
            elif len(server.requests) == 2:
                chunks = b"3\r\n" + bodies[1][:3] + b"\r\n5;x=y\r\n" + bodies[1][3:] + b"\r\n0\r\n"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"T: 1\r\n\r\n"
                )
            elif len(server.requests) == 3:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            else:
                writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
                await writer.drain()
                return

    async def main() -> None:
        async with RawServer(answer) as server, client() as http:
            first = await http.post(server.url + "/api/chat", json={"q": 1})
            assert first.json() == {"a": 1}
            assert (await http.post(server.url + "/api/chat", json={"q": 2})).json() == {"b": 2}
            assert (await http.get(server.url + "/x")).status_code == 204
            assert (await http.get(server.url + "/y")).content == b"until the end"
            assert server.connections == 1  # kept open until the server ended it
            assert server.requests[0].startswith(b"POST /api/chat HTTP/1.1\r\n")
            assert b"\r\ncontent-length: 7\r\n" in server.requests[0].lower()
            assert json.loads(server.requests[0].split(b"\r\n\r\n", 1)[1]) == {"q": 1}

    run(main())


def test_an_idle_connection_the_server_closed_is_replaced_without_an_error() -> None:
    async def answer(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        if await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        # and closes: as a server does with a connection idle past its timeout

    async def main() -> None:
        async with RawServer(answer) as server, client() as http:
            for _ in range(3):
                assert (await http.get(server.url)).text == "ok"
                await asyncio.sleep(0.05)
            assert server.connections == 3

    run(main())


def test_a_new_connection_closed_unanswered_is_an_error() -> None:
    async def answer(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        await server.read_request(reader)

    async def main() -> None:
        async with RawServer(answer) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match="without answering"):
                await http.get(server.url)
            assert server.connections == 1  # not sent twice

    run(main())


def test_an_answer_cut_short_is_an_error_and_the_connection_is_not_reused() -> None:
    async def answer(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await server.read_request(reader)
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def main() -> None:
        async with RawServer(answer) as server, client() as http:
            with pytest.raises(httpx.RemoteProtocolError, match="mid-answer"):
                await http.get(server.url)
            assert (await http.get(server.url)).text == "ok"
            assert server.connections == 2

    run(main())


def test_a_request_given_up_on_closes_its_connection_and_a_slow_answer_times_out() -> None:
    async def answer(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        await server.read_request(reader)
        await server.read_request(reader)  # never answers; sees the client close

    async def main() -> None:
        async with RawServer(answer) as server, client() as http:
            task = asyncio.ensure_future(http.get(server.url))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(100):
                if server.closed_by_client:
                    break
                await asyncio.sleep(0.01)
            assert server.closed_by_client == 1  # as Ollama learns to stop generating
            with pytest.raises(httpx.ReadTimeout):
                await http.get(server.url, timeout=httpx.Timeout(2.0, read=0.2))

    run(main())


def test_tls_to_a_trusted_server_and_a_connect_error_for_an_untrusted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = certificates(tmp_path, x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def answer(
        server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        while await server.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")

    async def main(trusted: bool) -> None:
        async with RawServer(answer, tls) as server, client() as http:
            if not trusted:
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await http.get(server.url)
                return
            assert [(await http.get(server.url)).text for _ in range(3)] == ["secret"] * 3
            assert server.connections == 1

    run(main(trusted=False))  # certifi's roots do not include the test CA
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # as httpx itself is told of a private CA
    run(main(trusted=True))


def test_a_refused_connection_is_a_connect_error() -> None:
    async def main() -> None:
        async with RawServer(lambda s, r, w, n: asyncio.sleep(0)) as free:
            url = free.url
        await asyncio.sleep(0.05)
        async with client() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(url)

    run(main())


def test_the_ollama_client_on_it_talks_to_the_standin() -> None:
    import ollama

    async def main(url: str) -> None:
        chat = ollama.AsyncClient(host=url, transport=KeepAliveTransport())
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
        for text in ("milk", "牛乳"):
            reply = await chat.chat(
                model="qwen2.5vl:7b",
                messages=[{"role": "user", "content": text}],
                format=schema,
                stream=False,
            )
            assert isinstance(json.loads(reply.message.content or ""), dict)
        with pytest.raises(ollama.ResponseError) as missing:
            await chat.chat(model="nope:1b", messages=[{"role": "user", "content": "x"}], stream=False)
        assert missing.value.status_code == 404
        await chat._client.aclose()

    with OllamaStandin(["qwen2.5vl:7b"]) as standin:
        asyncio.run(main(standin.url))
        assert [r.text for r in standin.requests] == ["milk", "牛乳"]
