"""A local HTTP server standing in for an Apprise target (a generic json:// endpoint, ntfy's API)."""

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """Records every request; answers 200, or `fail_next` times 500. Usable as a context manager."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.requests: list[Received] = []
        self.fail_next = 0
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._cond:
                    status = 500 if receiver.fail_next > 0 else 200
                    receiver.fail_next -= status == 500
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    receiver.requests.append(Received(self.command, self.path, headers, body, status))
                    receiver._cond.notify_all()
                answer = b'{"id": "x"}' if status == 200 else b'{"error": "down for a moment"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_POST = do_PUT = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def accepted(self) -> list[Received]:
        with self._cond:
            return [r for r in self.requests if r.status == 200]

    def wait_accepted(self, count: int, timeout: float = 20.0) -> list[Received]:
        """At least `count` accepted requests, or AssertionError."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: len([r for r in self.requests if r.status == 200]) >= count, timeout
            )
            seen = [(r.method, r.path, r.status) for r in self.requests]
        if not ok:
            raise AssertionError(f"{count} accepted notification(s) expected within {timeout}s; got {seen}")
        return self.accepted()
