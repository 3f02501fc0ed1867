"""The console's pages: server-rendered Jinja templates; a little plain JS makes them live."""

import asyncio
import datetime
import json
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from bridge import __version__
from bridge.web.console import Console
from bridge.web.guard import COOKIE, sign_session, token_matches
from bridge.web.jobs import job_detail, rule_summaries
from bridge.web.queries import MAX_LIMIT, Outcome, job_summary

TEMPLATES = Path(__file__).parent / "templates"
PAGE = 50
TIMELINE = 48


def _ms(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.0f} ms"


def _when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)


def pages_router(console: Console) -> APIRouter:
    """/, /jobs/{id}, /rules, /rules/{name}, /try, /todo, /login, /docs."""
    router = APIRouter(include_in_schema=False)
    templates = Jinja2Templates(directory=TEMPLATES)
    env = templates.env
    env.filters.update(ms=_ms, when=_when, pretty=_pretty)
    env.globals.update(version=__version__, login=console.settings.token is not None)
    core, view = console.core, console.view

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, context)

    @router.get("/", response_class=HTMLResponse)
    async def live(
        request: Request,
        rule: Annotated[str | None, Query(max_length=64)] = None,
        outcome: Outcome | None = None,
        before: Annotated[str | None, Query(pattern=r"^[0-9a-f]{1,40}$")] = None,
    ) -> HTMLResponse:
        rule = rule or None
        rows = await asyncio.to_thread(view.jobs, rule=rule, outcome=outcome, before=before, limit=PAGE)
        stats = core.stats()
        return page(
            request,
            "live.html",
            jobs=[job_summary(r) for r in rows],
            next=rows[-1].id if len(rows) == PAGE else None,
            rules=sorted(core.rules),
            rule=rule,
            outcome=outcome,
            before=before,
            health=await core.health(),
            stats=stats,
        )

    @router.get("/jobs/{job_id}", response_class=HTMLResponse)
    async def job(request: Request, job_id: str) -> HTMLResponse:
        if not job_id.isalnum() or len(job_id) > 40:
            raise HTTPException(404, "no such job")
        return page(request, "job.html", job=await job_detail(console, job_id))

    @router.get("/rules", response_class=HTMLResponse)
    async def rules(request: Request) -> HTMLResponse:
        return page(request, "rules.html", rules=await rule_summaries(console))

    @router.get("/rules/{name}", response_class=HTMLResponse)
    async def rule(
        request: Request,
        name: str,
        before: Annotated[str | None, Query(pattern=r"^[0-9a-f]{1,40}$")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = TIMELINE,
    ) -> HTMLResponse:
        if name not in core.rules:
            raise HTTPException(404, f"unknown rule {name!r}")
        summary = next(s for s in await rule_summaries(console) if s["name"] == name)
        rows = await asyncio.to_thread(view.jobs, rule=name, before=before, limit=limit)
        return page(
            request,
            "rule.html",
            rule=summary,
            jobs=[job_summary(r) for r in rows],
            next=rows[-1].id if len(rows) == limit else None,
        )

    @router.get("/try", response_class=HTMLResponse)
    async def try_page(request: Request) -> HTMLResponse:
        rules = [{"name": n, "model": r.model, "prompt": r.prompt} for n, r in sorted(core.rules.items())]
        return page(request, "try.html", rules=rules)

    @router.get("/todo", response_class=HTMLResponse)
    async def todo(request: Request) -> HTMLResponse:
        return page(request, "todo.html")

    @router.get("/docs", response_class=HTMLResponse)
    async def docs(request: Request) -> HTMLResponse:
        return page(request, "docs.html")

    @router.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/") -> HTMLResponse:
        return page(request, "login.html", next=_local(next), failed=False)

    @router.post("/login", response_model=None)
    async def login(
        request: Request,
        token: Annotated[str, Form(max_length=1024)],
        next: Annotated[str, Form(max_length=2048)] = "/",
    ) -> Response:
        expected = console.settings.token
        if expected is None:
            return RedirectResponse(_local(next), status_code=303)
        if not token_matches(expected.get_secret_value(), token):
            refused = page(request, "login.html", next=_local(next), failed=True)
            refused.status_code = 401
            return refused
        response = RedirectResponse(_local(next), status_code=303)
        response.set_cookie(
            COOKIE,
            sign_session(expected.get_secret_value(), int(time.time())),
            max_age=int(console.settings.session_max_age),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @router.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return response

    return router


def _local(target: str) -> str:
    """Only a path on this server (an open redirect would let a link send a person anywhere)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target
