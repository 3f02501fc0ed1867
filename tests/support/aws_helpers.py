"""Test helpers for AWS: moto in server mode over real HTTP, and boto3 clients pointed at it."""

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.support.mqtt_helpers import free_port, wait_for_port

REGION = "us-east-1"
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    # Never read a developer's real profile or credentials.
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}


class Moto:
    """A moto server on a free port, with clients and helpers to build queues and topics."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.sqs: Any = boto3.client("sqs", endpoint_url=self.url, region_name=REGION)
        self.sns: Any = boto3.client("sns", endpoint_url=self.url, region_name=REGION)
        self.s3: Any = boto3.client("s3", endpoint_url=self.url, region_name=REGION)

    @staticmethod
    def unique(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def queue(
        self, prefix: str = "jobs", *, visibility: int = 3, max_receive: int | None = None, fifo: bool = False
    ) -> tuple[str, str | None]:
        """A new queue (and its dead-letter queue when `max_receive` is set): (url, dlq url)."""
        name = self.unique(prefix) + (".fifo" if fifo else "")
        attributes = {"VisibilityTimeout": str(visibility)}
        if fifo:
            attributes |= {"FifoQueue": "true", "ContentBasedDeduplication": "true"}
        dlq_url = None
        if max_receive is not None:
            dlq_name = self.unique(f"{prefix}-dlq") + (".fifo" if fifo else "")
            dlq_url = self.sqs.create_queue(
                QueueName=dlq_name, Attributes={"FifoQueue": "true"} if fifo else {}
            )["QueueUrl"]
            policy = {"deadLetterTargetArn": self.arn(dlq_url), "maxReceiveCount": str(max_receive)}
            attributes["RedrivePolicy"] = json.dumps(policy)
        url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        return url, dlq_url

    def arn(self, queue_url: str) -> str:
        reply = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        return str(reply["Attributes"]["QueueArn"])

    def topic_arn(self, name: str) -> str:
        return f"arn:aws:sns:{REGION}:123456789012:{name}"

    def topic_to_queue(self, name: str) -> str:
        """Create topic `name` with a queue subscribed to it; returns the queue URL."""
        arn = self.sns.create_topic(Name=name)["TopicArn"]
        queue_url, _ = self.queue(f"{name}-inbox", visibility=30)
        self.sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=self.arn(queue_url))
        return queue_url

    def bucket(self, prefix: str = "images") -> str:
        name = self.unique(prefix)
        self.s3.create_bucket(Bucket=name)
        return name

    def send(self, queue_url: str, body: dict[str, Any] | str, **extra: Any) -> str:
        text = body if isinstance(body, str) else json.dumps(body)
        return str(self.sqs.send_message(QueueUrl=queue_url, MessageBody=text, **extra)["MessageId"])

    def read(self, queue_url: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """At least `count` messages from a queue (deleting them), or AssertionError."""
        found: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            reply = self.sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            for message in reply.get("Messages", []):
                found.append(message)
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        assert len(found) >= count, f"{len(found)}/{count} messages on {queue_url} within {timeout}s"
        return found

    def notifications(self, inbox_url: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """SNS envelopes (Subject, Message, MessageAttributes) that reached the subscribed queue."""
        return [json.loads(m["Body"]) for m in self.read(inbox_url, count, timeout)]

    def held(self, queue_url: str) -> int:
        """Messages in the queue, visible or not (i.e. not deleted)."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]) + int(
            attributes["ApproximateNumberOfMessagesNotVisible"]
        )

    def wait_held(self, queue_url: str, count: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while self.held(queue_url) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.held(queue_url)} message(s) in the queue, expected {count}")
            time.sleep(0.1)


@contextmanager
def moto_server() -> Iterator[Moto]:
    """moto on a free port, with fake credentials in the environment (daemons inherit them)."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in FAKE_ENV.items():
            patch.setenv(key, value)
        patch.delenv("AWS_PROFILE", raising=False)
        port = free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        wait_for_port(port)
        try:
            yield Moto(port)
        finally:
            server.stop()
