"""Reading a job's image from S3: only from allowed buckets, bounded in size, checked to be an image."""

import logging
import threading
from collections.abc import Callable
from typing import Any

import botocore.exceptions

from bridge.aws.clients import AwsClients, AwsError
from bridge.config.aws import AwsSettings
from bridge.errors import InputError
from bridge.pipeline.payloads import looks_like_image

log = logging.getLogger(__name__)


async def fetch_s3_image(
    aws: AwsClients, bucket: str, key: str, *, allowed: list[str], max_bytes: int
) -> bytes:
    """The object's bytes; InputError says why it cannot be a job's image."""
    where = f"s3://{bucket}/{key}"
    if bucket not in allowed:
        # A job must not make the bridge read whatever its credentials can reach.
        raise InputError(f"{where}: bucket {bucket!r} is not in aws.buckets")

    def get() -> bytes:
        response: dict[str, Any] = aws.s3.get_object(Bucket=bucket, Key=key)
        body = response["Body"]
        try:
            size = int(response.get("ContentLength", 0))
            if size > max_bytes:
                raise InputError(
                    f"{where} is {size:,} bytes, above the limit of {max_bytes:,} (aws.max_image)"
                )
            data: bytes = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise InputError(f"{where} is larger than the limit of {max_bytes:,} bytes (aws.max_image)")
        return data

    try:
        data = await aws.call(get)
    except AwsError as exc:
        if exc.code in ("NoSuchKey", "404", "NotFound"):
            raise InputError(f"{where} does not exist") from None
        if exc.code == "NoSuchBucket":
            raise InputError(f"{where}: the bucket does not exist") from None
        if exc.code in ("AccessDenied", "403"):
            raise InputError(f"{where}: access denied to the bridge's credentials") from None
        raise
    if not looks_like_image(data):
        raise InputError(f"{where} is not a JPEG, PNG or WebP image")
    return data


_TYPES = (
    (b"\xff\xd8\xff", "image/jpeg", ".jpg"),
    (b"\x89PNG", "image/png", ".png"),
    (b"RIFF", "image/webp", ".webp"),
)


class PictureUploads:
    """Each notified job's picture in `aws.image_bucket`, uploaded once, behind a pre-signed link."""

    def __init__(self, aws: AwsClients, settings: AwsSettings, fetch: Callable[[str], bytes]) -> None:
        self._aws = aws
        self._settings = settings
        self._fetch = fetch  # a picture from the journal by its hash (KeyError when pruned)
        self._uploaded: set[str] = set()
        self._lock = threading.Lock()

    def link(self, rule: str, job_id: str, digest: str, head: bytes) -> tuple[dict[str, str], str]:
        """Where the picture goes and a link to it. Signing is local: nothing is sent yet."""
        bucket = self._settings.image_bucket
        assert bucket is not None
        mimetype, suffix = next(((m, s) for magic, m, s in _TYPES if head.startswith(magic)), _TYPES[0][1:])
        key = f"{self._settings.image_prefix}{rule}/{job_id}{suffix}"
        url: str = self._aws.s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": bucket, "Key": key},
            ExpiresIn=int(self._settings.image_link_expiry),
        )
        return {"bucket": bucket, "key": key, "blob": digest, "mimetype": mimetype}, url

    def ensure(self, picture: dict[str, str]) -> None:
        """Upload the picture unless it is there already (runs in a worker thread; AWS errors raise)."""
        bucket, key = picture["bucket"], picture["key"]
        # One lock: several notifications of one job are sent at once, and the picture goes up once.
        with self._lock:
            if key in self._uploaded:
                return
            try:
                self._aws.s3.head_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
                try:
                    data = self._fetch(picture["blob"])
                except KeyError:
                    log.warning(
                        "the picture for s3://%s/%s is gone from the journal; the link will not work",
                        bucket,
                        key,
                    )
                    return
                self._aws.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=picture["mimetype"])
            self._uploaded.add(key)
