"""A camera's snapshot URL for tests: an HTTP server whose answer the test chooses."""

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Camera:
    """A camera's snapshot URL on a free port; `mode` decides what it answers."""

    def __init__(self, image: bytes) -> None:
        self.mode = "image"
        self.image = image
        self.hits = 0
        self.auth: list[str | None] = []
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                camera.hits += 1
                camera.auth.append(self.headers.get("Authorization"))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    camera.answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/camera_proxy/camera.door"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        if self.mode == "404":
            handler.send_error(404, "Not Found")
            return
        if self.mode == "slow":
            time.sleep(3)
        if self.mode == "html":
            body, kind = b"<html><body>login</body></html>", "text/html; charset=utf-8"
        elif self.mode == "huge":
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", str(50 * 1000 * 1000))
            handler.end_headers()
            chunk = b"\xff" * 65536
            for _ in range(800):
                handler.wfile.write(chunk)
            return
        else:
            body, kind = self.image, "image/jpeg"
        handler.send_response(200)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
