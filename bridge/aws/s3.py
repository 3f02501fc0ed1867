"""Reading a job's image from S3: only from allowed buckets, bounded in size, checked to be an image."""

from typing import Any

from bridge.aws.clients import AwsClients, AwsError
from bridge.errors import InputError
from bridge.pipeline.payloads import looks_like_image


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
