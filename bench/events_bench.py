"""What the lifecycle events cost: llm2mqtt's burst with every event published (the default),
with only those Home Assistant's event entities read by default (`job_done`, `job_failed`) and
with none (`mqtt.job_events: []`), interleaved in one run on a default Mosquitto.

The same figures as `compare` (bench/compare.py: CPU per job, jobs/s, added latency, messages
and SQL statements per job); the ratios are each setting's median over the default's.
"""

import json
import os
from typing import Any

from bench.common import median
from bench.compare import overhead

SETTINGS: dict[str, list[str] | None] = {
    "all": None,  # the default: job_queued, job_started, job_done, job_failed, job_skipped
    "finished": ["job_done", "job_failed"],
    "none": [],
}
FIGURES = ("cpu_ms_per_job", "cpu_ms_per_job_kernel", "jobs_per_s", "added_p99_ms", "messages_per_job")


def job_events(reps: int = 3, jobs: int = 2000) -> dict[str, Any]:
    """Repetitions of the three settings, rotated; per figure the median and the min."""
    names = list(SETTINGS)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            chosen = SETTINGS[name]
            mqtt = {} if chosen is None else {"job_events": chosen}
            figures = overhead("llm2mqtt", "default", jobs=jobs, paced=200, counted=100, mqtt=mqtt)
            load = round(os.getloadavg()[0], 2)
            print(json.dumps({"rep": rep, "job_events": name, "load1": load, **figures}), flush=True)
            runs[name].append(figures)
    summary: dict[str, Any] = {"reps": reps, "burst_jobs": jobs}
    for name, figures in runs.items():
        for key in FIGURES:
            values = [f[key] for f in figures]
            summary[f"{name}.{key}"] = {"median": round(median(values), 2), "min": min(values)}
        summary[f"{name}.lost"] = sum(f["lost"] for f in figures)
    for name in names[1:]:
        for key in ("cpu_ms_per_job", "jobs_per_s"):
            ratio = summary[f"{name}.{key}"]["median"] / summary[f"all.{key}"]["median"]
            summary[f"{name}_over_all.{key}"] = round(ratio, 2)
    return summary
