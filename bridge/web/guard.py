"""The door of the web server, in front of every route: Host, Origin, body size, login.

Pure ASGI, outermost, so it also covers the OpenAPI document, the static files and the
event stream, and so that a refused request never reaches FastAPI.

- Host: loopback names, IP addresses and `http.hosts`; any other name is refused, because a
  name the attacker controls that resolves to this machine is how DNS rebinding gets in.
- Origin: a changing request (POST, PUT, PATCH, DELETE) that a browser marks as coming from
  another site is refused with 403, whatever its credentials.
- Body: a declared or streamed body over `http.max_body` is refused with 413.
- Login: with `http.token`, every request carries it as a bearer token or carries the
  session cookie the login page gives for it (HttpOnly, SameSite=Strict, signed with the
  token, so changing the token ends every session).
"""

import contextlib
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote

from bridge.config.http import HttpSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "llm2mqtt_session"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Reachable without a login: the login page itself and the assets it is drawn with.
OPEN_PATHS = ("/login", "/static/")


def host_name(host_header: str) -> str:
    """The name part of a Host header, lower-case, without the port."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(host_header: str, extra: frozenset[str]) -> bool:
    """Loopback names, literal addresses (a rebinding attack needs a name) and listed names."""
    name = host_name(host_header)
    if not name:
        return False
    if name in LOOPBACK_NAMES or name in extra:
        return True
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def sign_session(token: str, issued: int) -> str:
    """A session value: when it was issued, signed with the token."""
    mac = hmac.new(token.encode(), f"session:{issued}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{mac}"


def session_valid(token: str, value: str, max_age: float, now: float) -> bool:
    """True for a value made by `sign_session` with this token that has not expired."""
    issued_text, _, _ = value.partition(".")
    if not issued_text.isdigit() or len(issued_text) > 12:
        return False
    issued = int(issued_text)
    if not issued <= now + 60 or now - issued > max_age:
        return False
    return secrets.compare_digest(value.encode(), sign_session(token, issued).encode())


def token_matches(token: str, given: str) -> bool:
    return secrets.compare_digest(given.strip().encode(), token.encode())


class Guard:
    """Wraps the FastAPI app; everything the server answers passes through here."""

    def __init__(self, app: App, settings: HttpSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.settings = settings
        self.token = settings.token.get_secret_value() if settings.token is not None else None
        self.hosts = frozenset(h.lower() for h in settings.hosts)
        self.origins = frozenset(o.rstrip("/").lower() for o in settings.origins)
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = headers.get("host", "")
        if not host_allowed(host, self.hosts):
            await _refuse(send, 400, f"host {host_name(host)!r} is not served here; add it to http.hosts")
            return
        method = scope["method"]
        if method not in SAFE_METHODS and not self._same_site(scope, headers, host):
            await _refuse(send, 403, "cross-site request refused (Origin is not this console's)")
            return
        length = headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > self.settings.max_body):
            await _refuse(send, 413, f"request body over the limit of {self.settings.max_body:,} bytes")
            return
        path = scope["path"]
        if self.token is not None and not path.startswith(OPEN_PATHS) and not self._signed_in(headers):
            await self._ask_login(scope, headers, send)
            return
        await self._capped(scope, receive, send)

    def _same_site(self, scope: Scope, headers: dict[str, str], host: str) -> bool:
        origin = headers.get("origin")
        if origin is None:
            # Browsers send Origin with every changing request; without it, a browser that
            # still says cross-site is refused, and a script or curl goes on to the login check.
            return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
        origin = origin.rstrip("/").lower()
        scheme = scope.get("scheme", "http")
        return origin == f"{scheme}://{host.lower()}" or origin in self.origins

    def _signed_in(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token_matches(self.token, given):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no session
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and session_valid(
            self.token, morsel.value, self.settings.session_max_age, self.clock()
        )

    async def _ask_login(self, scope: Scope, headers: dict[str, str], send: Send) -> None:
        wants_page = scope["method"] == "GET" and "text/html" in headers.get("accept", "")
        if wants_page and not scope["path"].startswith("/api/"):
            target = scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
            location = f"/login?next={quote(target, safe='')}"
            await send(
                {"type": "http.response.start", "status": 303, "headers": [(b"location", location.encode())]}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await _refuse(
            send, 401, "sign in: send Authorization: Bearer <http.token>, or log in at /login",
            [(b"www-authenticate", b"Bearer")],
        )  # fmt: skip

    async def _capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app with a body budget; a streamed body over it is answered with 413."""
        budget = self.settings.max_body
        seen = 0
        over = started = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > budget:
                    over = True
                    raise BodyTooLarge(budget)
            return message

        began = time.perf_counter()

        async def sending(message: Message) -> None:
            nonlocal started
            if over:
                return  # the app's answer to a body it could not read; the 413 goes instead
            if message["type"] == "http.response.start":
                # How long the console took to answer (the benchmarks read it; so can a browser).
                took = f"app;dur={(time.perf_counter() - began) * 1000:.1f}".encode()
                message["headers"] = [*message.get("headers", []), (b"server-timing", took)]
            started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counted, sending)
        if over and not started:
            await _refuse(send, 413, f"request body over the limit of {budget:,} bytes")


class BodyTooLarge(Exception):
    """A streamed body went over `http.max_body` (raised from `receive`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over the limit of {limit:,} bytes")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _refuse(
    send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})
