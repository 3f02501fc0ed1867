"""What the bridge publishes for a job: result, state, error and lifecycle events. Pure."""

from datetime import UTC, datetime
from typing import Any

from bridge.config.redact import redact_url
from bridge.config.rules import RuleBase
from bridge.pipeline.journal import Job, OutboxMessage
from bridge.pipeline.jsontext import dumps
from bridge.pipeline.topics import Topics


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(
    topics: Topics, kind: str, job_id: str | None, rule: str | None, ts: float, **extra: Any
) -> OutboxMessage:
    """An event on `<base>/bridge/event` (QoS 0: telemetry, not the record)."""
    payload = {"type": kind, "job_id": job_id, "rule": rule, "ts": iso(ts), **extra}
    return OutboxMessage(topic=topics.event, payload=dumps(payload), qos=0, kind=kind)


def done_messages(
    topics: Topics, rule: RuleBase, job: Job, payload: bytes, state: str | None, ts: float
) -> list[OutboxMessage]:
    """Result (`payload`: the result JSON, `dumps(result)`), state, the MQTT 5 response (if
    asked for) and the job_done event."""
    retain = rule.outputs.retain
    messages = [OutboxMessage(topic=topics.result(rule.name), payload=payload, retain=retain)]
    if rule.outputs.state and state is not None:
        messages.append(
            OutboxMessage(topic=topics.rule_state(rule.name), payload=state.encode(), retain=retain)
        )
    messages.extend(reply_messages(job, payload))
    messages.append(event(topics, "job_done", job.id, rule.name, ts))
    return messages


def decision_line(result: dict[str, Any], state: str | None) -> str:
    """The one log line of a finished job: rule, answer, confidence, source, model time."""
    confidence = result.get("confidence")
    sure = f" (confidence {confidence:.2f})" if isinstance(confidence, int | float) else ""
    return (
        f"{result['rule']}: {state if state is not None else 'done'}{sure} from {result['source']}; "
        f"model {result['timings']['llm']:.0f} ms, job {result['job_id']}"
    )


def failure_messages(
    topics: Topics,
    rule_name: str,
    job_id: str,
    error: str,
    summary: dict[str, Any],
    ts: float,
    *,
    job: Job | None = None,
    retry_in: float | None = None,
) -> list[OutboxMessage]:
    """The error message, and a job_failed event unless the job will be retried."""
    body: dict[str, Any] = {
        "job_id": job_id,
        "rule": rule_name,
        "error": error,
        "input": summary,
        "ts": iso(ts),
    }
    if retry_in is not None:
        body["retry_in_s"] = round(retry_in, 1)
    payload = dumps(body)
    messages = [OutboxMessage(topic=topics.error(rule_name), payload=payload)]
    if job is not None and retry_in is None:
        messages.extend(reply_messages(job, payload))
    if retry_in is None:
        messages.append(event(topics, "job_failed", job_id, rule_name, ts, error=error))
    else:
        messages.append(event(topics, "job_queued", job_id, rule_name, ts, retry_in_s=round(retry_in, 1)))
    return messages


def reply_messages(job: Job, payload: bytes) -> list[OutboxMessage]:
    """The MQTT 5 response: the answer again, on the requester's topic, with its correlation data."""
    reply = job.input.get("reply")
    if not reply or not reply.get("topic"):
        return []
    props = {"correlation_data": reply["correlation_data"]} if reply.get("correlation_data") else None
    return [OutboxMessage(topic=reply["topic"], payload=payload, props=props)]


def answer_messages(
    topics: Topics, rule: RuleBase | None, job: Job, reply: dict[str, Any], ts: float
) -> list[OutboxMessage]:
    """A finished job's answer for someone who asked again: its result (or its error) on the
    requester's response topic; without one, on the rule's result (or error) topic."""
    if job.state == "done" and job.result is not None:
        payload = dumps(job.result)
        topic = topics.result(job.rule)
        retain = rule.outputs.retain if rule is not None else False
    else:
        error = job.error or f"the job ended {job.state}"
        body = {"job_id": job.id, "rule": job.rule, "error": error, "input": input_summary(job)}
        payload, topic, retain = dumps({**body, "ts": iso(ts)}), topics.error(job.rule), False
    if reply.get("topic"):
        props = {"correlation_data": reply["correlation_data"]} if reply.get("correlation_data") else None
        return [OutboxMessage(topic=reply["topic"], payload=payload, props=props)]
    return [OutboxMessage(topic=topic, payload=payload, retain=retain)]


def input_summary(job: Job) -> dict[str, Any]:
    """What an error message says about the input: enough to recognise it, never the image."""
    data = job.input
    summary: dict[str, Any] = {"source": job.source}
    if data.get("id") is not None:
        summary["id"] = data["id"]
    if data.get("text"):
        summary["text"] = data["text"][:80]
    if job.image:
        summary["image"] = job.image[:12]
    if data.get("image_url"):
        summary["image_url"] = redact_url(data["image_url"])
    return summary
