"""`check --live` against moto's AWS server: queues, buckets and topics reached or reported."""

import os
import subprocess
import sys

import pytest

from tests.support.aws_helpers import moto_server
from tests.support.mqtt_helpers import ROOT

pytestmark = pytest.mark.aws


def test_check_live_reaches_queue_bucket_and_topic(write_config) -> None:
    with moto_server() as moto:
        queue, _ = moto.queue()
        bucket = moto.bucket()
        topic = moto.unique("t")
        moto.sns.create_topic(Name=topic)
        rule = {
            "name": "r",
            "handler": "yes_no",
            "model": "m",
            "prompt": "p?",
            "sns": [{"topic_arn": moto.topic_arn(topic)}, {"topic_arn": moto.topic_arn("missing-topic")}],
        }
        aws = {"endpoint_url": moto.url, "queue_url": queue, "buckets": [bucket, "missing-bucket"]}
        path = write_config([rule], aws=aws, mqtt={"url": "mqtt://127.0.0.1:1"})
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "check", "--live", "-c", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert f"SQS queue {queue}: reachable" in done.stdout
    assert f"S3 bucket {bucket}: reachable" in done.stdout
    assert "S3 bucket missing-bucket is not reachable" in done.stderr
    assert "missing-topic is not reachable" in done.stderr
