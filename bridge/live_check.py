"""`llm2mqtt check --live`: reach what the configuration names, one line per problem.

Every probe turns whatever goes wrong (a refused connection, a port that does not speak
HTTP, a broker that drops messages) into a sentence; nothing here raises to the command.
"""

import asyncio
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.config.rules import RuleBase
from bridge.config.settings import Config, MqttSettings, rule_backends
from bridge.config.todo import HomeAssistantTodoSettings
from bridge.errors import Llm2MqttError
from bridge.pipeline.backend_pool import build_pool
from bridge.pipeline.mqtt import configure_tls
from bridge.pipeline.ollama_backend import has_model
from bridge.pipeline.paho_socket import connect_failure
from bridge.todo.ha_backend import HomeAssistantTodo

# Inputs sent at once to a client that acknowledges late: more than Mosquitto's default
# in-flight window plus queue (20 + 1000), so a broker that would drop part of a burst shows it.
BURST_PROBE = 1100


class Report:
    """What the checks found: problems (exit 1), warnings, and what was fine."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.say = say


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- broker --------------------------------------------------------------------------------


def _client(mqtt: MqttSettings, suffix: str, *, manual_ack: bool = False) -> paho.Client:
    v5 = mqtt.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{mqtt.client_id}-{suffix}",
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        manual_ack=manual_ack,
    )
    client.max_inflight_messages_set(100)
    user, password = mqtt.credentials()
    if user is not None:
        client.username_pw_set(user, password)
    configure_tls(client, mqtt)  # exactly as the daemon connects
    return client


def _connect(client: paho.Client, mqtt: MqttSettings, properties: Properties | None = None) -> str | None:
    """Connect and start the network loop; a problem sentence, or None when connected."""
    outcome: dict[str, Any] = {}
    ready = threading.Event()

    def on_connect(c: paho.Client, u: Any, f: Any, reason: Any, p: Any) -> None:
        outcome["reason"] = reason
        ready.set()

    client.on_connect = on_connect
    try:
        client.connect(mqtt.host, mqtt.port, keepalive=10, properties=properties)
    except OSError as exc:
        return f"cannot reach the broker at {mqtt.safe_url()}: {connect_failure(exc)}"
    except ValueError as exc:
        return f"cannot reach the broker at {mqtt.safe_url()}: {_reason(exc)}"
    client.loop_start()
    if not ready.wait(5):
        return f"the broker at {mqtt.safe_url()} did not answer the connection within 5s"
    if outcome["reason"].is_failure:
        return f"the broker at {mqtt.safe_url()} refused the connection: {outcome['reason']}"
    return None


def check_broker(config: Config, report: Report) -> None:
    """Connect as the daemon would, then send a burst the way a flood arrives and count it."""
    mqtt = config.settings.mqtt
    sender = _client(mqtt, "check")
    try:
        problem = _connect(sender, mqtt)
        if problem:
            report.problems.append(problem)
            return
        report.say(f"broker at {mqtt.safe_url()}: connected")
        warning = _burst_probe(sender, mqtt)
        if warning:
            report.warnings.append(warning)
    except Exception as exc:  # a probe must not end in a traceback
        report.problems.append(f"checking the broker at {mqtt.safe_url()} failed: {_reason(exc)}")
    finally:
        sender.disconnect()
        sender.loop_stop()


def _burst_probe(sender: paho.Client, mqtt: MqttSettings) -> str | None:
    """Does the broker keep a burst for a client that acknowledges only once it journaled?"""
    topic = f"{mqtt.base_topic}/bridge/check/{secrets.token_hex(4)}"
    received: list[int] = []
    lock = threading.Lock()
    probe = _client(mqtt, "check-probe", manual_ack=True)

    def on_message(c: paho.Client, u: Any, message: paho.MQTTMessage) -> None:
        with lock:
            received.append(message.mid)

    probe.on_message = on_message
    properties = None
    if mqtt.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.ReceiveMaximum = mqtt.receive_maximum
    try:
        if _connect(probe, mqtt, properties):
            return None  # the main check already said what is wrong with the connection
        subscribed = threading.Event()
        probe.on_subscribe = lambda *args: subscribed.set()
        probe.subscribe(topic, 1)
        subscribed.wait(5)
        infos = [sender.publish(topic, b"x", qos=1) for _ in range(BURST_PROBE)]
        for info in infos:
            info.wait_for_publish(10)
        time.sleep(0.5)
        with lock:
            held = len(received)
        # Acknowledge what came; the broker then sends whatever it kept queued.
        acked = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                batch = received[acked:]
            for mid in batch:
                probe.ack(mid, 1)
            acked += len(batch)
            if acked >= BURST_PROBE:
                break
            time.sleep(0.3 if batch else 0.6)
            with lock:
                if len(received) == acked:
                    break
    finally:
        probe.disconnect()
        probe.loop_stop()
    if acked >= BURST_PROBE:
        return None
    fix = (
        "use mqtt.protocol 5, or raise Mosquitto's max_queued_messages"
        if mqtt.protocol != "5"
        else "raise Mosquitto's max_queued_messages or max_inflight_messages"
    )
    return (
        f"the broker dropped {BURST_PROBE - acked} of {BURST_PROBE} QoS 1 messages sent at once to a"
        f" client that acknowledges late (it had {held} in flight, then its queue was full): a burst"
        f" of inputs that large would lose jobs; {fix} (README: Broker settings)"
    )


# -- HTTP: Ollama, snapshot URLs, Home Assistant's to-do entity ------------------------------


async def check_http(config: Config, report: Report) -> None:
    await _check_ollama(config, report)
    async with httpx.AsyncClient(follow_redirects=True) as client:
        for rule in config.rules:
            await _check_snapshot(client, config, rule, report)
        todo = config.settings.todo
        if todo.backend == "homeassistant" and todo.homeassistant is not None:
            await _check_todo_entity(todo.homeassistant, report)


async def _check_ollama(config: Config, report: Report) -> None:
    """Every backend: reachable, and has the models of the rules that may use it."""
    backends = config.settings.backend_settings()
    pool = build_pool(config.settings)
    try:
        for name, member in pool.members.items():
            try:
                offered = await member.server.models()
            except Llm2MqttError as exc:
                report.problems.append(str(exc))
                continue
            except Exception as exc:
                report.problems.append(
                    f"cannot talk to {member.label}: {_reason(exc)} (is that the server's HTTP port?)"
                )
                continue
            report.say(f"{member.label}: {len(offered)} model(s)")
            for rule in config.rules:
                model = rule.model_for(name)
                if name in rule_backends(rule, backends, image=False) and not has_model(offered, model):
                    where = config.rule_files.get(rule.name, "?")
                    if member.kind == "ollama":
                        problem = f"'{model}' is not pulled; run `ollama pull {model}` (backend {name!r})"
                    else:
                        problem = f"'{model}' is not offered by backend {name!r} ({member.server.url})"
                    report.problems.append(f"{where}: model: {problem}")
    finally:
        await pool.close()


async def _check_snapshot(client: httpx.AsyncClient, config: Config, rule: RuleBase, report: Report) -> None:
    options = rule.snapshot
    if options is None or options.url is None:
        return
    where = f"{config.rule_files.get(rule.name, rule.name)}: snapshot.url {options.url}"
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else None
    try:
        async with client.stream("GET", options.url, headers=headers, timeout=options.timeout) as reply:
            kind = reply.headers.get("content-type", "").split(";")[0].strip().lower() or "no content type"
            if reply.status_code != 200:
                hint = " (check snapshot.token)" if reply.status_code in (401, 403) else ""
                report.problems.append(f"{where} answered HTTP {reply.status_code}{hint}")
            elif not kind.startswith("image/"):
                report.problems.append(f"{where} answered 200 with {kind}, not an image")
            else:
                report.say(f"{where}: 200, {kind}")
    except httpx.TimeoutException:
        report.problems.append(f"{where} did not answer within {options.timeout:g}s")
    except Exception as exc:
        report.problems.append(f"{where} cannot be reached: {_reason(exc)}")


async def _check_todo_entity(settings: HomeAssistantTodoSettings, report: Report) -> None:
    """Read the list the way the daemon will (todo.get_items), so the same errors show."""
    where = f"todo.homeassistant: {settings.entity_id} at {settings.url}"
    backend = HomeAssistantTodo(settings)
    try:
        items = await backend.items()
    except Llm2MqttError as exc:
        report.problems.append(f"{where}: {exc}")
    except Exception as exc:
        report.problems.append(f"{where}: {_reason(exc)}")
    else:
        report.say(f"{where}: reachable, {len(items)} item(s)")
    finally:
        await backend.close()


def run_checks(config: Config, say: Callable[[str], None]) -> Report:
    """Every live check, in order: broker, Ollama, snapshot URLs, the to-do entity."""
    report = Report(say)
    check_broker(config, report)
    asyncio.run(check_http(config, report))
    return report
