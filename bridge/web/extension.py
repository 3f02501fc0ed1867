"""The web feature: the console's pages and REST API on FastAPI/uvicorn, inside the daemon's loop.

Each feature brings its own routers (`/api/todo` from the Todo extension), collected at start.
Loopback by default; any other bind address needs a token, so nothing is open to the network
by mistake. Every request passes `Guard` first (Host, Origin, body size, login).
"""

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Sequence

import uvicorn
from fastapi import APIRouter, FastAPI

from bridge import __version__
from bridge.config.http import HttpSettings
from bridge.extension import Core, Extension
from bridge.web.console import Console
from bridge.web.metrics import metrics_router

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The daemon owns SIGTERM/SIGINT; uvicorn must not take them over.
        yield


class WebExtension(Extension):
    """Serves the console while the daemon runs, with the routers of the features before it."""

    name = "web"

    def __init__(self, settings: HttpSettings, providers: Sequence[Extension] = ()) -> None:
        self.settings = settings
        self._providers = list(providers)
        # FastAPI's own /docs loads its scripts from a CDN; the console serves its own at /docs.
        self.app = FastAPI(title="llm2mqtt", version=__version__, docs_url=None, redoc_url=None)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.console: Console | None = None
        self.port = settings.port

    def include_router(self, router: APIRouter) -> None:
        self.app.include_router(router)

    async def start(self, core: Core) -> None:
        from bridge.web.app import build_console, mount_console
        from bridge.web.guard import Guard

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
        # Listening from here on: a client that comes once the bridge says online is queued in
        # the backlog until uvicorn's task starts accepting, instead of being refused.
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self.console = build_console(core, self.settings)
        mount_console(self.app, self.console)
        config = uvicorn.Config(
            Guard(self.app, self.settings),
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http")
        log.info("web console on http://%s:%d (API docs at /docs)", self.settings.host, self.port)

    async def stop(self) -> None:
        if self.console is not None:
            self.console.hub.close()  # open event streams end, so the server can stop
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=5)
        if self.console is not None:
            self.console.view.close()
            self.console.thumbs.close()
