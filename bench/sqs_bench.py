"""SQS → model → SNS: the bridge against the naive loop, with moto as the queue.

Both consume the same number of text jobs from a fresh queue and publish each answer to an
SNS topic (subscribed by a queue that counts arrivals); the stand-in answers instantly. The
bridge's SQS calls are counted in the daemon (its botocore hook, logged at stop); the naive
loop's by a hook on its own client. The naive loop is the textbook consumer: receive one
message, ask the model, publish, delete it.
"""

import json
import re
import time
from collections import Counter
from typing import Any

import boto3
import httpx

from bench.common import TEXT_RULE, Client, stack, wait_online
from tests.support.aws_helpers import REGION, Moto, moto_server
from tests.support.ollama_standin import OllamaStandin


def _send_jobs(moto: Moto, queue_url: str, jobs: int, tag: str) -> None:
    for start in range(0, jobs, 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": json.dumps({"rule": "bench_text", "id": f"{tag}{i}", "text": f"buy item {i}"}),
            }
            for i in range(start, min(start + 10, jobs))
        ]
        moto.sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def _wait_arrived(moto: Moto, inbox_url: str, count: int, timeout: float) -> float:
    """When `count` notifications have reached the inbox queue (polled, not received)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attributes = moto.sqs.get_queue_attributes(
            QueueUrl=inbox_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        if int(attributes["ApproximateNumberOfMessages"]) >= count:
            return time.perf_counter()
        time.sleep(0.02)
    raise TimeoutError(f"fewer than {count} notifications within {timeout}s")


def _bridge_run(moto: Moto, jobs: int, parallel: int, max_in_flight: int | None = None) -> dict[str, Any]:
    queue, _ = moto.queue("bench-jobs", visibility=30)
    topic = moto.unique("bench-answers")
    inbox = moto.topic_to_queue(topic)
    rule = {**TEXT_RULE, "inputs": [], "sns": [{"topic_arn": moto.topic_arn(topic)}]}
    aws = {
        "endpoint_url": moto.url,
        "region": REGION,
        "queue_url": queue,
        "heartbeat": 5,
        "visibility_timeout": 30,
    }
    with stack([rule], parallel=parallel, aws=aws, log_level="info") as (broker, _standin, daemon):
        client = Client(broker.port, ["llm2mqtt/bridge/state"])
        wait_online(client)
        client.close()
        time.sleep(0.5)  # the first long poll is out
        started = time.perf_counter()
        _send_jobs(moto, queue, jobs, "b")
        ended = _wait_arrived(moto, inbox, jobs, 300)
        moto.wait_held(queue, 0, timeout=60)
        daemon.stop(60)
        log = daemon.output()
    match = re.search(r"sqs totals (\{.*\})", log)
    if match is None:
        raise RuntimeError("the daemon did not log its SQS totals")
    calls: dict[str, int] = json.loads(match.group(1))["api_calls"]
    return {"seconds": ended - started, "calls": calls}


def _naive_run(moto: Moto, jobs: int, ollama_url: str) -> dict[str, Any]:
    queue, _ = moto.queue("bench-naive", visibility=30)
    topic = moto.unique("bench-naive-answers")
    inbox = moto.topic_to_queue(topic)
    sqs = boto3.client("sqs", endpoint_url=moto.url, region_name=REGION)
    sns = boto3.client("sns", endpoint_url=moto.url, region_name=REGION)
    calls: Counter[str] = Counter()
    sqs.meta.events.register("before-call.sqs", lambda model, **_: calls.update([model.name]))
    _send_jobs(moto, queue, jobs, "n")
    done = 0
    started = time.perf_counter()
    with httpx.Client(base_url=ollama_url, timeout=30) as http:
        while done < jobs:
            reply = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, WaitTimeSeconds=20)
            for message in reply.get("Messages", []):
                body = json.loads(message["Body"])
                answer = http.post(
                    "/api/chat",
                    json={
                        "model": "qwen2.5:3b",
                        "stream": False,
                        "messages": [{"role": "user", "content": body["text"]}],
                    },
                ).json()
                sns.publish(TopicArn=moto.topic_arn(topic), Message=answer["message"]["content"])
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
                done += 1
    ended = _wait_arrived(moto, inbox, jobs, 60)
    return {"seconds": ended - started, "calls": dict(calls)}


def bench_sqs(jobs: int = 200, parallel: int = 2) -> dict[str, Any]:
    with moto_server() as moto:
        bridge = _bridge_run(moto, jobs, parallel)
        with OllamaStandin() as standin:
            naive = _naive_run(moto, jobs, standin.url)

    def per_job(calls: dict[str, int]) -> dict[str, float]:
        mine = {
            "receive": calls.get("ReceiveMessage", 0),
            "heartbeat": calls.get("ChangeMessageVisibilityBatch", 0)
            + calls.get("ChangeMessageVisibility", 0),
            "delete": calls.get("DeleteMessageBatch", 0) + calls.get("DeleteMessage", 0),
        }
        mine["total"] = sum(calls.values())
        return {k: round(v / jobs, 3) for k, v in mine.items()}

    bridge_calls, naive_calls = per_job(bridge["calls"]), per_job(naive["calls"])
    return {
        "jobs": jobs,
        "parallel": parallel,
        "bridge_jobs_per_s": round(jobs / bridge["seconds"], 1),
        "naive_jobs_per_s": round(jobs / naive["seconds"], 1),
        "bridge_sqs_calls_per_job": bridge_calls,
        "naive_sqs_calls_per_job": naive_calls,
        "calls_ratio_naive_over_bridge": round(naive_calls["total"] / bridge_calls["total"], 2),
        "bridge_sqs_calls": bridge["calls"],
    }
