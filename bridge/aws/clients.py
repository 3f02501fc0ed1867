"""boto3 clients for SQS, S3 and SNS, called without blocking the event loop.

boto3 is blocking. Short calls run in a small thread pool of our own; SQS long polls (up to
20 s) run in daemon threads, so a stopping daemon never waits for a poll to come back.
Library errors become `AwsError` here, with the service's code and message.
"""

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import boto3
import botocore.config
from botocore.exceptions import BotoCoreError, ClientError

from bridge.config.aws import AwsSettings
from bridge.errors import Llm2MqttError

T = TypeVar("T")

# Codes that no retry can fix: the request itself is wrong.
PERMANENT_CODES = frozenset({"InvalidParameter", "InvalidParameterValue", "ValidationError"})


class AwsError(Llm2MqttError):
    """An AWS call failed; `code` is the service's error code ("" when it was not reached)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code

    @property
    def permanent(self) -> bool:
        return self.code in PERMANENT_CODES


class AwsClients:
    """The three clients, one thread pool, and a count of SQS calls by operation."""

    def __init__(self, settings: AwsSettings, *, threads: int = 8) -> None:
        session = boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
        config = botocore.config.Config(
            connect_timeout=5,
            read_timeout=max(30, int(settings.wait_time) + 10),
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=threads + 4,
        )
        self.sqs: Any = session.client("sqs", endpoint_url=settings.endpoint_url, config=config)
        # SigV4 for S3 too: pre-signed picture links are then accepted in every region.
        s3_config = config.merge(botocore.config.Config(signature_version="s3v4"))
        self.s3: Any = session.client("s3", endpoint_url=settings.endpoint_url, config=s3_config)
        self.sns: Any = session.client("sns", endpoint_url=settings.endpoint_url, config=config)
        self.sqs_calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.sqs.meta.events.register("before-call.sqs", self._count)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="aws")

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.sqs_calls[model.name] += 1

    async def call(self, method: Callable[..., T], **kwargs: Any) -> T:
        """Run a client method in the pool; AwsError on failure."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, partial(_translated, method, kwargs))
        except RuntimeError as exc:  # the pool is shut down: the daemon is stopping
            raise AwsError(f"AWS call abandoned: {exc}") from None

    async def poll(self, method: Callable[..., T], **kwargs: Any) -> T:
        """Run a long call (an SQS long poll) in a daemon thread that nobody has to join."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(outcome: Callable[[], None]) -> None:
            if not future.done():
                outcome()

        def run() -> None:
            try:
                value = _translated(method, kwargs)
            except BaseException as exc:
                callback = partial(settle, partial(future.set_exception, exc))
            else:
                callback = partial(settle, partial(future.set_result, value))
            with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon has stopped
                loop.call_soon_threadsafe(callback)

        threading.Thread(target=run, name="aws-poll", daemon=True).start()
        return await future

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _translated(method: Callable[..., T], kwargs: dict[str, Any]) -> T:
    try:
        return method(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        raise AwsError(f"{exc.operation_name}: {code}: {error.get('Message', '')}", code) from None
    except BotoCoreError as exc:
        raise AwsError(f"AWS not reachable: {exc}") from None


class AwsContext:
    """Clients shared by the AWS extensions: made by the first to start, closed by the last."""

    def __init__(self, settings: AwsSettings) -> None:
        self.settings = settings
        self._clients: AwsClients | None = None
        self._users = 0
        self._lock = asyncio.Lock()

    async def open(self) -> AwsClients:
        async with self._lock:
            if self._clients is None:
                # Building clients reads botocore's service models from disk: off the loop.
                self._clients = await asyncio.to_thread(AwsClients, self.settings)
            self._users += 1
            return self._clients

    def close(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._clients is not None:
            self._clients.close()
            self._clients = None


def queue_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]
