"""Prometheus metrics of one daemon, in a registry of its own (served on /metrics by the web server).

Counters that the pipeline keeps anyway (jobs, model calls, skips) are read when scraped;
the latency histograms and token counters are fed as jobs finish.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge import __version__
from bridge.config.redact import redact_url
from bridge.pipeline.intake import Intake
from bridge.pipeline.journal import Journal
from bridge.pipeline.ollama_backend import OllamaBackend
from bridge.pipeline.queue import JobQueue
from bridge.pipeline.receive_budget import ReceiveBudget
from bridge.pipeline.runner import Runner

# Seconds; a home GPU answers in tenths of a second to a minute.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class MetricsSource:
    """The parts of the daemon a scrape reads."""

    runner: Runner
    intake: Intake
    queue: JobQueue
    journal: Journal
    backends: Sequence[OllamaBackend]
    receive: ReceiveBudget  # mqtt.receive_memory


class Metrics:
    """The daemon's registry; the runner tells it about every finished job."""

    def __init__(self, source: MetricsSource) -> None:
        self.registry = CollectorRegistry()
        self._source = source
        labels = ["rule"]
        self.queue_seconds = Histogram(
            "llm2mqtt_queue_seconds",
            "Time a job waited before it ran",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_seconds = Histogram(
            "llm2mqtt_model_seconds",
            "Time spent in model calls per job (all calls, re-asks included)",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "llm2mqtt_job_seconds",
            "Receipt of an input to its result",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "llm2mqtt_tokens", "Tokens of finished jobs", ["rule", "kind"], registry=self.registry
        )
        self.registry.register(_Snapshot(source))
        # Each rule's series, looked up once: `labels()` takes a lock and builds a key per call.
        self._series: dict[str, _RuleSeries] = {}

    def job_done(self, rule: str, result: dict[str, Any]) -> None:
        """Observe a finished job's latencies and tokens (from its result)."""
        series = self._series.get(rule)
        if series is None:
            series = self._series[rule] = _RuleSeries(
                self.queue_seconds.labels(rule),
                self.model_seconds.labels(rule),
                self.job_seconds.labels(rule),
                self.tokens.labels(rule, "prompt"),
                self.tokens.labels(rule, "eval"),
            )
        timings, tokens = result.get("timings", {}), result.get("tokens", {})
        series.queue.observe(timings.get("queued", 0.0) / 1000)
        series.model.observe(timings.get("llm", 0.0) / 1000)
        series.job.observe(timings.get("total", 0.0) / 1000)
        series.prompt_tokens.inc(tokens.get("prompt", 0))
        series.eval_tokens.inc(tokens.get("eval", 0))


@dataclass(frozen=True)
class _RuleSeries:
    """One rule's children of the histograms and token counters."""

    queue: Histogram
    model: Histogram
    job: Histogram
    prompt_tokens: Counter
    eval_tokens: Counter


class _Snapshot(Collector):
    """Reads the daemon's own counters and gauges at scrape time."""

    def __init__(self, source: MetricsSource) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        source = self._source
        info = GaugeMetricFamily("llm2mqtt_build_info", "The running version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._per_rule()
        yield GaugeMetricFamily("llm2mqtt_queue_depth", "Jobs waiting to run", value=len(source.queue))
        yield GaugeMetricFamily("llm2mqtt_jobs_running", "Jobs running now", value=len(source.runner.running))
        yield GaugeMetricFamily(
            "llm2mqtt_outbox_backlog", "Messages waiting for delivery", value=source.journal.outbox_size()
        )
        in_flight = GaugeMetricFamily(
            "llm2mqtt_backend_in_flight", "Model requests in flight", labels=["backend"]
        )
        up = GaugeMetricFamily(
            "llm2mqtt_backend_up",
            "1 when the backend answered its last request, 0 when not",
            labels=["backend"],
        )
        for backend in source.backends:
            url = redact_url(backend.url)
            in_flight.add_metric([url], backend.in_flight)
            if backend.reachable is not None:
                up.add_metric([url], int(backend.reachable))
        yield in_flight
        yield up
        yield from self._receive()
        files = [source.journal.path, Path(f"{source.journal.path}-wal")]
        size = sum(path.stat().st_size for path in files if path.exists())
        yield GaugeMetricFamily(
            "llm2mqtt_journal_bytes", "Size of the journal database and its WAL", value=size
        )
        by_state = GaugeMetricFamily("llm2mqtt_journal_jobs", "Jobs kept in the journal", labels=["state"])
        for state, count in sorted(source.journal.counts().items()):
            by_state.add_metric([state], count)
        yield by_state

    def _receive(self) -> Iterator[Metric]:
        budget = self._source.receive
        if budget.limit is None:
            return  # mqtt.receive_memory is off: nothing is counted
        yield GaugeMetricFamily(
            "llm2mqtt_receive_held_bytes", "Received payload bytes not yet journaled", value=budget.held
        )
        yield GaugeMetricFamily(
            "llm2mqtt_receive_limit_bytes", "mqtt.receive_memory: reading pauses at it", value=budget.limit
        )
        yield CounterMetricFamily(
            "llm2mqtt_receive_pauses", "Times reading from the broker paused for room", value=budget.waits
        )
        yield CounterMetricFamily(
            "llm2mqtt_receive_overruns",
            "Times reading went on past the limit, to keep the connection alive",
            value=budget.overruns,
        )

    def _per_rule(self) -> Iterator[Metric]:
        jobs = CounterMetricFamily(
            "llm2mqtt_jobs",
            "Jobs by outcome: done, failed (in the run), rejected (bad input)",
            labels=["rule", "outcome"],
        )
        calls = CounterMetricFamily("llm2mqtt_model_calls", "Model calls (re-asks included)", labels=["rule"])
        skips = CounterMetricFamily(
            "llm2mqtt_skips", "Inputs not sent to the model, by reason", labels=["rule", "reason"]
        )
        duplicates, rejected = self._source.intake.duplicates, self._source.intake.rejected
        for rule in sorted(rejected.keys() - self._source.runner.stats.keys()):
            jobs.add_metric([rule, "rejected"], rejected[rule])  # a run topic of an unknown rule
        for rule, stats in sorted(self._source.runner.stats.items()):
            jobs.add_metric([rule, "done"], stats.done)
            jobs.add_metric([rule, "failed"], stats.failed)
            jobs.add_metric([rule, "rejected"], rejected[rule])
            calls.add_metric([rule], stats.model_calls)
            reasons = {**stats.skipped, "superseded": stats.superseded, "duplicate": duplicates[rule]}
            for reason, count in sorted(reasons.items()):
                skips.add_metric([rule, reason], count)
        yield jobs
        yield calls
        yield skips
