"""The model servers as one pool: their health, holding jobs through an outage, and slots.

Each backend is reachable, unreachable, or not yet known. A call that finds nothing at a
backend's address (`BackendDown`) makes it unreachable; so does any other backend fault after
which a quick probe finds nothing there either (a server that restarted mid-answer). While a
backend is unreachable a prober asks it again with a growing pause (up to `PROBE_MAX`); its
first answer makes it reachable again.

Faults of the server are never the job's: a job whose backends are all unreachable is *held*
(the runner puts it back in the journal without counting the attempt, and the pool gives it
back to the queue when one of them answers again), and a job whose backend fails on the way
goes to the next one in its list.

Concurrency: everything runs on the daemon's event loop; `parallel` per backend is enforced
here, before a request is sent, so a server never sees more than its own limit.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.config.redact import redact_url
from bridge.config.settings import OpenAIBackendSettings, Settings
from bridge.errors import BackendDown, BackendUnavailable
from bridge.pipeline.ollama_backend import LlmReply, OllamaBackend, has_model
from bridge.pipeline.results import iso

log = logging.getLogger(__name__)

PROBE_FIRST = 0.5  # first pause before probing a backend that just went away (seconds)
PROBE_MAX = 30.0  # longest pause between probes
REMIND_EVERY = 300.0  # how often the log repeats what it is still waiting for


class ModelServer(Protocol):
    """What the pool needs from one backend (Ollama, an OpenAI-compatible server)."""

    url: str

    async def chat(
        self,
        *,
        model: str,
        messages: Sequence[dict[str, Any]],
        schema: dict[str, Any] | None,
        options: dict[str, Any] | None = None,
        keep_alive: str | float | None = None,
        deadline: float | None = None,
    ) -> LlmReply:
        """One structured chat request."""
        ...

    async def probe(self) -> list[str]:
        """The models loaded now; raises BackendDown when nothing usable answers."""
        ...

    async def models(self) -> list[str]:
        """The models the server has (pulled, or offered)."""
        ...

    async def close(self) -> None:
        """Release the connection pool."""
        ...


@dataclass(frozen=True)
class Member:
    """A backend as configured: its name, how to reach it, and its limits."""

    name: str
    server: ModelServer
    kind: str = "ollama"
    parallel: int = 1
    local: bool = True

    @property
    def label(self) -> str:
        """How the log names it: `Ollama at URL`, or `Ollama 'pc' at URL` when several."""
        kind = {"ollama": "Ollama", "openai": "OpenAI-compatible server"}.get(self.kind, self.kind)
        named = "" if self.name == self.kind else f" {self.name!r}"
        return f"{kind}{named} at {self.server.url}"


@dataclass
class BackendHealth:
    """What bridge/health says about one backend."""

    reachable: bool | None = None  # None: not asked yet
    since: float | None = None  # when `reachable` last changed
    last_error: str | None = None
    loaded: list[str] = field(default_factory=list)
    in_flight: int = 0
    calls: int = 0
    latency_ms: float | None = None  # the last answer's wall time
    reminded: float = 0.0  # when the log last said we wait for it

    def as_dict(self, member: Member) -> dict[str, Any]:
        return {
            "type": member.kind,
            "url": redact_url(member.server.url),
            "local": member.local,
            "parallel": member.parallel,
            "reachable": self.reachable,
            "since": iso(self.since) if self.since is not None else None,
            "last_error": self.last_error,
            "loaded": sorted(self.loaded),
            "in_flight": self.in_flight,
            "calls": self.calls,
            "latency_ms": round(self.latency_ms, 1) if self.latency_ms is not None else None,
        }


class NoBackend(BackendUnavailable):
    """None of the job's backends is reachable: the job waits (no attempt spent)."""

    def __init__(self, names: Sequence[str], detail: str) -> None:
        super().__init__(f"no backend reachable ({', '.join(names)}): {detail}", job_fault=False)
        self.names = tuple(names)


class BackendPool:
    """The configured backends, their health, and their slots. Used on one event loop."""

    def __init__(
        self,
        members: Iterable[Member],
        *,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[], None] | None = None,
        probe_max: float = PROBE_MAX,
        remind_every: float = REMIND_EVERY,
    ) -> None:
        self.members: dict[str, Member] = {m.name: m for m in members}
        self.health: dict[str, BackendHealth] = {name: BackendHealth() for name in self.members}
        self._clock = clock
        self._on_change = on_change
        self._probe_max = probe_max
        self._remind_every = remind_every
        self._kick = asyncio.Event()  # set (and replaced) whenever a slot or a health changes
        self._probers: dict[str, asyncio.Task[None]] = {}
        self._held: list[tuple[frozenset[str], Callable[[], None]]] = []
        self._closed = False

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        """Ask every backend once, in the background: the log and bridge/health learn early."""
        for name in self.members:
            self._probers[name] = asyncio.create_task(self._probe_until_up(name, first=0.0))

    def closing(self) -> None:
        """The daemon stops: callers waiting for a slot get NoBackend; running calls go on."""
        self._closed = True
        self._wake()

    async def close(self, *, servers: bool = True) -> None:
        """Stop probing and close the servers' connections (after the running calls)."""
        self.closing()
        for task in self._probers.values():
            task.cancel()
        for task in self._probers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._probers.clear()
        for member in self.members.values() if servers else ():
            await member.server.close()

    # -- what the runner uses --------------------------------------------------------

    def usable(self, names: Iterable[str]) -> bool:
        """Whether any of `names` may be tried now (reachable, or not asked yet)."""
        return any(self.health[name].reachable is not False for name in names)

    async def wait_usable(self, names: Iterable[str] | None = None) -> None:
        """Until one of `names` (default: any backend) may be tried, or the pool closes."""
        wanted = list(names or self.members)
        while not (self._closed or self.usable(wanted)):
            await self._kick.wait()

    def hold(self, names: Iterable[str], release: Callable[[], None]) -> None:
        """Call `release` once one of `names` answers again (at once when one already does)."""
        wanted = frozenset(names)
        if self.usable(wanted) and not self._closed:
            release()
            return
        self._held.append((wanted, release))

    @property
    def held(self) -> int:
        return len(self._held)

    async def chat(
        self, names: Sequence[str], model_for: Callable[[str], str], **request: Any
    ) -> tuple[str, LlmReply]:
        """Ask the first fitting backend of `names`; one that turns out unreachable hands the
        request to the next. Returns the name of the backend that answered and its reply."""
        while True:
            name = await self._lease(names, model_for)
            health = self.health[name]
            started = time.perf_counter()
            try:
                reply = await self.members[name].server.chat(model=model_for(name), **request)
            except BackendUnavailable as exc:
                if isinstance(exc, BackendDown) or not await self._answers(name):
                    self._mark_down(name, str(exc))
                    continue  # the next backend, or NoBackend: never the job's fault
                health.last_error = str(exc)
                raise
            finally:
                health.in_flight -= 1
                self._wake()
            health.calls += 1
            health.latency_ms = (time.perf_counter() - started) * 1000
            return name, reply

    async def preload(self, names: Sequence[str], model_for: Callable[[str], str], **request: Any) -> None:
        """Load a model ahead of a job on the Ollama backend of `names` that job would most likely
        get (reachable, the model already there if one has it). Outside the slots: it is a hint,
        an empty chat that Ollama answers once the model is in memory. OpenAI-compatible
        servers load models on their own and are left alone."""
        ollama = [
            n for n in names if self.members[n].kind == "ollama" and self.health[n].reachable is not False
        ]
        if not ollama:
            return
        warm = [n for n in ollama if has_model(self.health[n].loaded, model_for(n))]
        name = (warm or ollama)[0]
        await self.members[name].server.chat(model=model_for(name), messages=[], schema=None, **request)

    async def _lease(self, names: Sequence[str], model_for: Callable[[str], str]) -> str:
        """A slot on the best backend of `names`: free, with the model loaded if one has it."""
        while True:
            if self._closed:
                raise NoBackend(names, "the daemon is stopping")
            tried = [n for n in names if self.health[n].reachable is not False]
            if not tried:
                errors = sorted({e for n in names if (e := self.health[n].last_error)})
                raise NoBackend(names, "; ".join(errors) or "unreachable")
            free = [n for n in tried if self.health[n].in_flight < self.members[n].parallel]
            if free:
                warm = [n for n in free if has_model(self.health[n].loaded, model_for(n))]
                name = (warm or free)[0]
                self.health[name].in_flight += 1
                return name
            await self._kick.wait()

    async def _answers(self, name: str) -> bool:
        """Whether the backend answers a probe right now (after a fault mid-request)."""
        try:
            loaded = await self.members[name].server.probe()
        except BackendUnavailable:
            return False
        self.health[name].loaded = loaded
        return True

    # -- health ----------------------------------------------------------------------

    async def refresh(self) -> None:
        """Ask each reachable backend what it has loaded (and so notice one that left)."""
        for name, health in self.health.items():
            if health.reachable:
                try:
                    loaded = await self.members[name].server.probe()
                except BackendUnavailable as exc:
                    self._mark_down(name, str(exc))
                else:
                    if sorted(loaded) != sorted(health.loaded):
                        health.loaded = loaded
                        self._changed()

    def payload(self) -> dict[str, Any]:
        """Each backend's part of bridge/health."""
        return {name: self.health[name].as_dict(member) for name, member in self.members.items()}

    def loaded_models(self) -> list[str]:
        return sorted({model for health in self.health.values() for model in health.loaded})

    def _mark_down(self, name: str, error: str) -> None:
        health = self.health[name]
        health.last_error = error
        if health.reachable is False:
            return
        health.reachable, health.since = False, self._clock()
        health.loaded = []
        health.reminded = time.monotonic()
        log.warning(
            "backend %r unreachable: %s. Its jobs wait (or go to the next backend of their rule) "
            "without spending attempts; probing again every %.0fs at most",
            name,
            error,
            self._probe_max,
        )
        self._changed()
        self._wake()
        if not self._closed and (name not in self._probers or self._probers[name].done()):
            self._probers[name] = asyncio.create_task(self._probe_until_up(name, first=PROBE_FIRST))

    def _mark_up(self, name: str, loaded: list[str]) -> None:
        health = self.health[name]
        health.loaded = loaded
        if health.reachable:
            return
        was_down = health.reachable is False
        away = self._clock() - (health.since or self._clock())
        health.reachable, health.since = True, self._clock()
        released = self._release(name)
        if was_down:
            log.info(
                "%s answers again after %.0fs away; %d held job(s) go back to the queue",
                self.members[name].label,
                away,
                released,
            )
        else:
            log.info("%s answers (%d model(s) loaded)", self.members[name].label, len(loaded))
        self._changed()
        self._wake()

    def _release(self, name: str) -> int:
        ready = [release for names, release in self._held if name in names]
        self._held = [(names, release) for names, release in self._held if name not in names]
        for release in ready:
            release()
        return len(ready)

    async def _probe_until_up(self, name: str, *, first: float) -> None:
        """Probe with a growing pause until the backend answers; remind the log now and then."""
        pause = first
        member, health = self.members[name], self.health[name]
        while not self._closed:
            if pause:
                await asyncio.sleep(pause)
            try:
                loaded = await member.server.probe()
            except BackendUnavailable as exc:
                if health.reachable is not False:
                    self._mark_down(name, str(exc))  # this task goes on probing
                health.last_error = str(exc)
                if time.monotonic() - health.reminded >= self._remind_every:
                    health.reminded = time.monotonic()
                    log.warning(
                        "still waiting for %s (away %.0fs; %d job(s) held; last error: %s)",
                        member.label,
                        self._clock() - (health.since or self._clock()),
                        self.held,
                        exc,
                    )
                pause = min(max(pause * 2, PROBE_FIRST), self._probe_max)
                continue
            self._mark_up(name, loaded)
            return

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _wake(self) -> None:
        self._kick.set()
        self._kick = asyncio.Event()


def build_pool(settings: Settings, **options: Any) -> BackendPool:
    """The pool of the configured backends, in config order (`ollama:` is the backend `ollama`)."""
    members = []
    for name, backend in settings.backend_settings().items():
        server: ModelServer
        if isinstance(backend, OpenAIBackendSettings):
            from bridge.pipeline.openai_backend import (
                OpenAIBackend,  # the openai package loads only when used
            )

            server = OpenAIBackend(backend)
        else:
            server = OllamaBackend(backend)
        members.append(
            Member(name, server, kind=backend.type, parallel=backend.parallel, local=backend.local)
        )
    return BackendPool(members, **options)
