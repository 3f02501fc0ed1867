"""The daemon's HTTP server: FastAPI on uvicorn, inside the daemon's own event loop.

Each feature brings its own routers (`/api/todo` from the Todo extension), collected at start;
this module owns the server, the settings and the bearer-token check. Loopback by default;
any other bind address needs a token, so the list is never open to the network by mistake.
"""

import asyncio
import contextlib
import logging
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence

import uvicorn
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from bridge import __version__
from bridge.config.http import HttpSettings
from bridge.extension import Core, Extension
from bridge.web.metrics import metrics_router

log = logging.getLogger(__name__)

Next = Callable[[Request], Awaitable[Response]]


def bearer_required(token: SecretStr) -> Callable[[Request, Next], Awaitable[Response]]:
    """Middleware refusing any request (API, OpenAPI document, docs) without the bearer token."""
    expected = token.get_secret_value().encode()

    async def check(request: Request, call_next: Next) -> Response:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), expected):
            return JSONResponse(
                {"detail": "missing or wrong bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    return check


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT; uvicorn must not take them over.
        yield


class WebExtension(Extension):
    """Serves `app` while the daemon runs, with the routers of the features before it."""

    name = "web"

    def __init__(self, settings: HttpSettings, providers: Sequence[Extension] = ()) -> None:
        self.settings = settings
        self._providers = list(providers)
        self.app = FastAPI(title="llm2mqtt", version=__version__)
        if settings.token is not None:
            self.app.middleware("http")(bearer_required(settings.token))
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = settings.port

    def include_router(self, router: APIRouter) -> None:
        self.app.include_router(router)

    async def start(self, core: Core) -> None:
        for provider in self._providers:
            for router in provider.routers():
                self.include_router(router)
        self.include_router(metrics_router(core.metrics.registry))
        # Bound here, so a port in use stops the daemon with a clear error instead of an exit
        # deep inside uvicorn.
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.settings.host, self.settings.port))
        except OSError as exc:
            sock.close()
            where = f"{self.settings.host}:{self.settings.port}"
            raise OSError(f"http: cannot listen on {where}: {exc}") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        log.info("REST API on http://%s:%d (OpenAPI at /openapi.json)", self.settings.host, self.port)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=5)
