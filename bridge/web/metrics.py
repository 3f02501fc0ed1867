"""GET /metrics: the daemon's Prometheus registry in the text exposition format."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    """A router serving `registry` on /metrics."""
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        # On the loop: the scrape reads the daemon's counters and the journal, which are the loop's.
        body = generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
