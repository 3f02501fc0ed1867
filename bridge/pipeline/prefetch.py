"""A job's image_url, fetched before the job takes a model slot.

The fetched image is stored in the journal and the job queued again, so a slow or hostile
server holds one of a few fetch slots, never a model slot; a job whose fetch fails is failed
without having waited for the model. A stop cancels the fetches: their jobs stay queued.
"""

import asyncio
from collections.abc import Callable

import httpx

from bridge.config.settings import Settings
from bridge.errors import InputError
from bridge.pipeline.fetch import fetch_job_image
from bridge.pipeline.journal import Job, Journal
from bridge.pipeline.queue import JobQueue
from bridge.pipeline.url_guard import UrlGuard

# image_url fetches run beside the model slots, this many at once.
FETCHES_AT_ONCE = 4


class Prefetcher:
    """Fetches image_urls for the runner; `fail` reports a job whose fetch failed."""

    def __init__(
        self,
        journal: Journal,
        queue: JobQueue,
        settings: Settings,
        fail: Callable[[Job, str], None],
        running: set[str],
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._journal = journal
        self._queue = queue
        self._settings = settings
        self._fail = fail
        self._running = running
        # Redirects are followed by hand (each hop checked); no proxy from the environment,
        # which would connect to something other than the checked address.
        self._http = http or httpx.AsyncClient(follow_redirects=False, trust_env=False)
        self.guard = UrlGuard(settings.image_url.allow)
        self._slots = asyncio.Semaphore(FETCHES_AT_ONCE)
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, job_id: str) -> Job | None:
        """Mark the job running and return it; or, for a waiting job whose image_url is not
        fetched yet, start that fetch and return None (the job is not run now)."""
        # One statement for most jobs; a job that may need a fetch is read to find out.
        started = self._journal.start_unless_fetching(job_id)
        if started is not None:
            return started
        job = self._journal.get(job_id)
        if job is None or job.state != "queued" or job.image is not None or not job.input.get("image_url"):
            return self._journal.start(job_id)
        task = asyncio.create_task(self._prefetch(job), name=f"fetch-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _prefetch(self, job: Job) -> None:
        self._running.add(job.id)
        try:
            async with self._slots:
                data = await self.fetch(job)
        except InputError as exc:
            self._fail(self._journal.start(job.id), str(exc))
            return
        finally:
            self._running.discard(job.id)
        self._journal.attach_image(job.id, self._journal.put_blob(data))
        self._journal.after_commit(
            lambda: self._queue.push(job.id, priority=job.priority, created=job.created)
        )

    async def fetch(self, job: Job) -> bytes:
        """The job's image_url, within image_url.allow and image_url.timeout."""
        limits, options = self._settings.limits, self._settings.image_url
        return await fetch_job_image(
            self._http,
            job.input["image_url"],
            self.guard,
            max_bytes=limits.max_payload,
            timeout=options.timeout,
            max_redirects=options.max_redirects,
        )

    async def close(self) -> None:
        """Stop the fetches under way (their jobs stay queued) and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()
