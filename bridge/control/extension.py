"""Requests on `<base>/bridge/request/<name>`, answered on `<base>/bridge/response/<name>`.

As in Zigbee2MQTT, a request is a JSON object (or empty); its `transaction` comes back in
the response, which is `{"status": "ok", "data": …}` or `{"status": "error", "error": …}`.
"""

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from bridge.config.loader import load_config
from bridge.config.redact import redact_url, redact_urls_in
from bridge.config.rules import RuleBase
from bridge.control.reload import plan_reload
from bridge.errors import BackendError, ConfigError
from bridge.extension import Core, Extension
from bridge.pipeline.backend_pool import ModelServer
from bridge.pipeline.images import PreparedImage
from bridge.pipeline.journal import Job, OutboxMessage
from bridge.pipeline.mqtt import Inbound
from bridge.pipeline.results import iso

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.5  # seconds between pull progress events


class RequestError(Exception):
    """A request that cannot be done; the message goes into the error response."""

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.data = data


class ControlExtension(Extension):
    """Answers health_check, reload, rule/pause, rule/resume, rule/check, backend/models and backend/pull."""

    name = "control"

    def __init__(self) -> None:
        self._core: Core | None = None
        self._paused: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def core(self) -> Core:
        assert self._core is not None, "used before start()"
        return self._core

    async def start(self, core: Core) -> None:
        self._core = core
        self._paused = self._load_paused()
        core.route(core.topics.request_filter, self._on_request)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def before_model(self, job: Job, rule: RuleBase, image: PreparedImage | None) -> str | None:
        return "paused" if rule.name in self._paused else None

    @property
    def paused(self) -> list[str]:
        return sorted(self._paused)

    # -- requests ---------------------------------------------------------------------

    def _on_request(self, message: Inbound) -> None:
        name = self.core.topics.request_name(message.topic)
        if name is None:
            return
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "health_check": self._health_check,
            "reload": self._reload,
            "rule/pause": lambda body: self._pause(body, True),
            "rule/resume": lambda body: self._pause(body, False),
            "rule/check": self._check,
            "backend/models": self._models,
            "backend/pull": self._pull,
        }
        body, problem = _parse(message.payload)
        transaction = body.get("transaction")
        if problem is None and name not in handlers:
            problem = f"unknown request {name!r}; known: {', '.join(handlers)}"
        if problem is not None:
            self._respond(name, transaction, error=problem)
            return
        task = asyncio.create_task(
            self._answer(name, handlers[name], body, transaction), name=f"request-{name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self,
        name: str,
        handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
        body: dict[str, Any],
        transaction: Any,
    ) -> None:
        try:
            data = await handler(body)
        except RequestError as exc:
            self._respond(name, transaction, error=str(exc), data=exc.data)
        except BackendError as exc:
            self._respond(name, transaction, error=str(exc))
        except Exception as exc:  # a bug answers the request instead of leaving it unanswered
            log.exception("request %s failed", name)
            self._respond(name, transaction, error=f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._respond(name, transaction, data=data)

    def _respond(self, name: str, transaction: Any, *, data: Any = None, error: str | None = None) -> None:
        payload: dict[str, Any] = {
            "data": data if data is not None else {},
            "status": "error" if error else "ok",
        }
        if error:
            payload["error"] = error
        if transaction is not None:
            payload["transaction"] = transaction
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.core.publish([OutboxMessage(self.core.topics.response(name), body, qos=1)])

    async def _health_check(self, body: dict[str, Any]) -> dict[str, Any]:
        """Ask every backend now: healthy while at least one of them answers."""
        members = list(self.core.pool.members.values())
        answers = await asyncio.gather(*(_probe(member.server) for member in members))
        backends = {
            member.name: {"type": member.kind, "url": redact_url(member.server.url), **answer}
            for member, answer in zip(members, answers, strict=True)
        }
        backend = self.core.backend  # the first Ollama one, as `ollama` always said
        ollama = next(
            (backends[m.name] for m in members if m.server is backend), {"url": redact_url(backend.url)}
        )
        return {
            "healthy": any(answer["reachable"] for answer in answers),
            "broker": {"connected": True},
            "ollama": ollama,
            "backends": backends,
        }

    async def _reload(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            fresh = await asyncio.to_thread(load_config, self.core.config_path)
        except ConfigError as exc:
            raise RequestError(
                f"the configuration is invalid; nothing was changed ({len(exc.problems)} problem(s))",
                problems=exc.problems,
            ) from None
        enabled = {rule.name: rule for rule in fresh.rules if rule.enabled}
        plan = plan_reload(self.core.settings, self.core.rules, fresh.settings, enabled)
        for rule in plan.replace.values():
            self.core.replace_rule(rule)
        self.core.set_restart_required(plan.restart_required)
        if plan.applied or plan.restart_required:
            log.info("reload: applied %s; restart required for %s", plan.applied, plan.restart_required)
        return {"applied": plan.applied, "restart_required": plan.restart_required}

    async def _pause(self, body: dict[str, Any], paused: bool) -> dict[str, Any]:
        rule = self._rule(body)
        (self._paused.add if paused else self._paused.discard)(rule.name)
        await asyncio.to_thread(self._save_paused)
        if rule.schedule is not None:
            # A paused rule's schedule stops too (no snapshots only to skip them), and its
            # `paused` switch in Home Assistant shows it: through the schedule's public topic.
            switch = b"ON" if paused else b"OFF"
            self.core.publish([OutboxMessage(self.core.topics.paused_set(rule.name), switch, qos=1)])
        return {"rule": rule.name, "paused": paused}

    async def _check(self, body: dict[str, Any]) -> dict[str, Any]:
        rule = self._rule(body)
        if rule.snapshot is None:
            raise RequestError(
                f"rule {rule.name!r} has no snapshot source; publish an input on "
                f"{self.core.topics.run(rule.name)} instead"
            )
        # The scheduled-checks feature owns snapshots; its public topic starts the check.
        self.core.publish([OutboxMessage(self.core.topics.check(rule.name), b"", qos=1)])
        return {"rule": rule.name, "requested": True}

    async def _models(self, body: dict[str, Any]) -> dict[str, Any]:
        backend = self.core.backend
        return {
            "url": backend.url,
            "models": sorted(await backend.models()),
            "loaded": sorted(await backend.loaded()),
        }

    async def _pull(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            raise RequestError('backend/pull needs {"model": "name:tag"}')
        last_sent, last_status = 0.0, ""
        async for line in self.core.backend.pull(model):
            status = str(line.get("status", ""))
            now = time.monotonic()
            if status != last_status or now - last_sent >= PROGRESS_EVERY:
                last_sent, last_status = now, status
                self._progress(model, line, body.get("transaction"))
        return {"model": model, "status": "success"}

    def _progress(self, model: str, line: Mapping[str, Any], transaction: Any) -> None:
        event: dict[str, Any] = {
            "type": "pull_progress",
            "model": model,
            "status": line.get("status"),
            "ts": iso(time.time()),
        }
        total, completed = line.get("total"), line.get("completed")
        if isinstance(total, int) and total > 0 and isinstance(completed, int):
            event.update(total=total, completed=completed, percent=round(100 * completed / total, 1))
        if transaction is not None:
            event["transaction"] = transaction
        payload = json.dumps(event, ensure_ascii=False).encode()
        self.core.publish([OutboxMessage(self.core.topics.event, payload, qos=0)], urgent=False)

    def _rule(self, body: dict[str, Any]) -> RuleBase:
        name = body.get("rule")
        rule = self.core.rules.get(name) if isinstance(name, str) else None
        if rule is None:
            known = ", ".join(sorted(self.core.rules)) or "none"
            raise RequestError(f'unknown rule {name!r}; send {{"rule": "<name>"}} with one of: {known}')
        return rule

    # -- paused rules survive a restart ------------------------------------------------

    def _paused_file(self) -> Path:
        return self.core.data_dir / "paused_rules.json"

    def _load_paused(self) -> set[str]:
        try:
            names = json.loads(self._paused_file().read_text())
        except (OSError, ValueError):
            return set()
        return {n for n in names if isinstance(n, str)} if isinstance(names, list) else set()

    def _save_paused(self) -> None:
        path = self._paused_file()
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(sorted(self._paused)))
        temporary.replace(path)


def _parse(payload: bytes) -> tuple[dict[str, Any], str | None]:
    """The request body; a plain string is taken as the rule or model it names."""
    text = payload.decode("utf-8", "replace").strip()
    if not text:
        return {}, None
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return {"rule": text, "model": text}, None
    if isinstance(body, str):
        return {"rule": body, "model": body}, None
    if not isinstance(body, dict):
        return {}, 'a request is a JSON object, e.g. {"rule": "front_door_lock", "transaction": 1}'
    return body, None


async def _probe(server: ModelServer) -> dict[str, Any]:
    """One backend's answer for health_check: reachable and its loaded models, or the error."""
    try:
        return {"reachable": True, "loaded": sorted(await server.probe())}
    except BackendError as exc:
        return {"reachable": False, "error": redact_urls_in(str(exc))}
