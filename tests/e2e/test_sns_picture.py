"""SNS notifications with a pre-signed link to the picture: the real daemon against moto over HTTP."""

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import LOCK_RULE
from tests.support.aws_helpers import Moto, moto_server
from tests.support.mqtt_helpers import Collector, Daemon
from tests.support.samples import jpeg

pytestmark = [pytest.mark.broker, pytest.mark.aws]


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    with moto_server() as server:
        yield server


def test_sns_messages_link_the_picture_uploaded_once_per_job(
    daemon: Callable[..., Daemon], collector: Collector, moto: Moto
) -> None:
    bucket = moto.bucket("pictures")
    phone, mail = moto.unique("phone"), moto.unique("mail")
    phone_inbox, mail_inbox = moto.topic_to_queue(phone), moto.topic_to_queue(mail)
    rule = {
        **LOCK_RULE,
        "sns": [
            {"topic_arn": moto.topic_arn(phone), "message": "{{ state }}: {{ image_url }}"},
            {"topic_arn": moto.topic_arn(mail)},  # the result JSON, with image_url in it
        ],
    }
    aws = {"endpoint_url": moto.url, "region": "us-east-1", "image_bucket": bucket, "image_link_expiry": "1h"}
    daemon([rule], aws=aws)
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    picture = jpeg(210, size=(800, 600))
    collector.publish("cameras/front_door/snapshot", picture)
    result = collector.wait_for("llm2mqtt/front_door_lock/result")[0].json()

    [to_phone] = moto.notifications(phone_inbox, 1)
    [to_mail] = moto.notifications(mail_inbox, 1)
    state, _, link = to_phone["Message"].partition(": ")
    assert state == "locked"
    assert json.loads(to_mail["Message"])["image_url"] == link
    assert f"/{bucket}/llm2mqtt/front_door_lock/{result['job_id']}.jpg" in link
    assert "X-Amz-Signature=" in link
    assert "X-Amz-Expires=3600" in link
    fetched = httpx.get(link, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == picture  # the picture as received
    keys = [o["Key"] for o in moto.s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [f"llm2mqtt/front_door_lock/{result['job_id']}.jpg"]  # once for two messages


def test_without_image_bucket_messages_carry_no_link(
    daemon: Callable[..., Daemon], collector: Collector, moto: Moto
) -> None:
    topic = moto.unique("plain")
    inbox = moto.topic_to_queue(topic)
    daemon([{**LOCK_RULE, "sns": [{"topic_arn": moto.topic_arn(topic)}]}], aws={"endpoint_url": moto.url})
    collector.wait_for("llm2mqtt/bridge/state", where=lambda m: m.json() == {"state": "online"})
    collector.publish("cameras/front_door/snapshot", jpeg(30))
    [note] = moto.notifications(inbox, 1)
    assert "image_url" not in json.loads(note["Message"])
