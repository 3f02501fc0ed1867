"""A lean HTTP/1.1 transport on the event loop, for the chat requests to Ollama.

`send` takes a whole request as bytes (bridge.pipeline.ollama_chat writes the chat request
itself); `handle_async_request` makes it an httpx transport as well.

The ollama client hands its keyword arguments to its httpx client, `transport=` among them.
Per chat request against the Ollama stand-in, httpx's own asyncio transport (httpcore over
anyio) cost about 1.3 ms of CPU and the blocking client on a thread of its own about 1.0 ms;
this one, asyncio streams kept open between requests, about 0.5 ms
(`python -m bench transport`).

It speaks what Ollama's server speaks: HTTP/1.1 with keep-alive, a body sized by
Content-Length, chunked, or ended by the server closing, over TCP or TLS (Ollama behind a
proxy). The whole response body is read before the response is returned: chat requests are
sent with `stream=False`. A request given up on (its task cancelled by the job's deadline)
closes its connection, which is how Ollama learns to stop generating.
"""

import asyncio
import ssl
from dataclasses import dataclass

import httpx

_NO_BODY = (204, 304)
Origin = tuple[str, str, int]  # scheme, host, port
_DROPPED = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}


class _ClosedUnanswered(Exception):
    """The server closed the connection before a byte of the answer (an idle one it timed out)."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


def origin_of(url: httpx.URL) -> Origin:
    """Where a URL's requests go: scheme, host and port (the scheme's default if none)."""
    return (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """Sends each request on an idle open connection to its host, or a new one."""

    def __init__(self, *, max_idle: int = 8) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._max_idle = max_idle
        self._ssl: ssl.SSLContext | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = origin_of(request.url)
        timeouts = request.extensions.get("timeout", {})
        status, headers, body = await self.send(
            origin,
            _head(request, await request.aread()),
            connect_timeout=timeouts.get("connect"),
            read_timeout=timeouts.get("read"),
            head_only=request.method == "HEAD",
            request=request,
        )
        return httpx.Response(status, headers=headers, content=body, request=request)

    async def send(
        self,
        origin: Origin,
        data: bytes,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        head_only: bool = False,
        request: httpx.Request | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send `data`, a whole request (line, headers, body), to `origin`; the answer's status,
        headers and body. Errors are httpx's (ConnectError, ReadTimeout, RemoteProtocolError,
        ReadError), with `request` when there is one."""
        connection, reused = self._take(origin), True
        if connection is None:
            connection, reused = await self._connect(origin, connect_timeout, request), False
        try:
            try:
                status, headers, body, keep = await self._exchange(
                    connection, data, head_only, request, read_timeout
                )
            except _ClosedUnanswered:
                connection.close()
                if not reused:
                    raise httpx.RemoteProtocolError(
                        "the server closed the connection without answering", request=request
                    ) from None
                # An idle connection the server had closed: the request never reached it.
                connection = await self._connect(origin, connect_timeout, request)
                status, headers, body, keep = await self._exchange(
                    connection, data, head_only, request, read_timeout
                )
        except BaseException:
            connection.close()  # half a request or half an answer: the connection is no use
            raise
        if keep:
            self._give_back(origin, connection)
        else:
            connection.close()
        return status, headers, body

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.usable:
                return connection
            connection.close()
        return None

    def _give_back(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) < self._max_idle and connection.usable:
            idle.append(connection)
        else:
            connection.close()

    async def _connect(
        self, origin: Origin, timeout: float | None, request: httpx.Request | None
    ) -> _Connection:
        scheme, host, port = origin
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()  # what httpx verifies against by default
            context = self._ssl
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, ssl=context)
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"no connection to {host}:{port} in {timeout}s", request=request
            ) from None
        except OSError as exc:  # refused, unreachable, no such host, TLS refused
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}", request=request) from exc
        return _Connection(reader, writer)

    async def _exchange(
        self,
        connection: _Connection,
        data: bytes,
        head_only: bool,
        request: httpx.Request | None,
        timeout: float | None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        try:
            async with asyncio.timeout(timeout):
                connection.writer.write(data)
                return await _read_response(connection.reader, head_only)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer in {timeout}s", request=request) from None
        except asyncio.IncompleteReadError as exc:
            raise httpx.RemoteProtocolError(
                f"the server closed the connection mid-answer ({len(exc.partial)} bytes short read)",
                request=request,
            ) from None
        except asyncio.LimitOverrunError:
            raise httpx.RemoteProtocolError("an answer's header is too long", request=request) from None
        except (ValueError, IndexError) as exc:
            raise httpx.RemoteProtocolError(f"not an HTTP/1.1 answer: {exc}", request=request) from None
        except OSError as exc:
            raise httpx.ReadError(f"the connection broke: {exc}", request=request) from exc


def _head(request: httpx.Request, body: bytes) -> bytes:
    """The request line, headers and body as one write. The body is always sized: a streamed
    request body was read whole above."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    lines += [name + b": " + value for name, value in request.headers.raw if name.lower() not in _DROPPED]
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def _read_response(
    reader: asyncio.StreamReader, head_only: bool
) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    first = True
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            partial = getattr(exc, "partial", b"")
            if first and not partial:
                raise _ClosedUnanswered from None
            raise
        first = False
        status_line, *header_lines = head[:-4].split(b"\r\n")
        version, code = status_line.split(b" ", 2)[:2]
        status = int(code)
        if not 100 <= status < 200:
            break  # an interim answer (100 Continue) is followed by the real one
    headers = []
    length, chunked = None, False
    keep = version == b"HTTP/1.1"
    for line in header_lines:
        name, _, value = line.partition(b":")
        value = value.strip()
        headers.append((name, value))
        key = name.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"connection":
            keep = value.lower() == b"keep-alive" or (keep and value.lower() != b"close")
    if head_only or status in _NO_BODY:
        return status, headers, b"", keep
    if chunked:
        return status, headers, await _read_chunked(reader), keep
    if length is not None:
        return status, headers, await reader.readexactly(length), keep
    return status, headers, await reader.read(), False  # ended by the server closing


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        parts.append((await reader.readexactly(size + 2))[:-2])
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass  # trailers
    return b"".join(parts)
