"""Run the benchmarks: `python -m bench [name ...] [--quick]`. Prints one JSON line per benchmark."""

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import (
    backends_bench,
    compare,
    events_bench,
    floods,
    fsync_bench,
    images_bench,
    outage_bench,
    schedule_bench,
    spine,
    sqs_bench,
    syscalls,
    todo_bench,
    transport,
    wal_pages,
    web_bench,
)
from bench.common import env_note


def _image_path(quick: bool) -> dict[str, Any]:
    return images_bench.bench_image_path(repeat=5 if quick else 31)


def _compare(kind: compare.BrokerKind) -> Callable[[bool], dict[str, Any]]:
    def run(quick: bool) -> dict[str, Any]:
        if quick:
            return compare.compare(reps=1, kind=kind, jobs=300, paced=100, sat_jobs=20)
        return compare.compare(reps=3, kind=kind)

    return run


BENCHES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "compare": _compare("default"),
    "compare_tuned": _compare("tuned"),
    "broker_settings": lambda quick: compare.broker_settings(
        reps=1 if quick else 2, jobs=500 if quick else 2000
    ),
    "syscalls": lambda quick: syscalls.syscalls(jobs=300 if quick else 1000),
    "wal_pages": lambda quick: wal_pages.wal_pages(jobs=500 if quick else 2000),
    "fsync": lambda quick: fsync_bench.fsync_cost(syncs=50 if quick else 200),
    "job_events": lambda quick: events_bench.job_events(reps=1 if quick else 3, jobs=500 if quick else 2000),
    "overhead": lambda quick: spine.overhead(jobs=500 if quick else 2000, paced=150 if quick else 500),
    "saturation": lambda quick: spine.saturation(jobs=60 if quick else 200),
    "image_path": _image_path,
    "transport": lambda quick: transport.transport(calls=500 if quick else 2000, rounds=3 if quick else 5),
    "memory": lambda quick: spine.memory(jobs=1000 if quick else 10_000),
    "memory_bounded": lambda quick: spine.memory(jobs=1000 if quick else 10_000, receive_memory="8MB"),
    "schedule": schedule_bench.schedule,
    "sqs": lambda quick: sqs_bench.bench_sqs(jobs=60 if quick else 300),
    "todo": todo_bench.bench_todo,
    "web": web_bench.bench_web,
    "burst": lambda quick: floods.burst(jobs=2000 if quick else 10_000),
    "burst_receive_max_20": lambda quick: floods.burst(jobs=2000 if quick else 10_000, receive_maximum=20),
    "durability": lambda quick: floods.durability(*((300, 5, 150) if quick else (1000, 5, 500))),
    "outage": lambda quick: outage_bench.outage(down=20 if quick else 60),
    "two_hosts": lambda quick: backends_bench.two_hosts(jobs=80 if quick else 200),
    "shared_group": lambda quick: backends_bench.shared_group(jobs=500 if quick else 2000),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "names", nargs="*", choices=[[], *BENCHES], default=[], help="benchmarks to run (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs, for a smoke test")
    args = parser.parse_args()
    print(f"# llm2mqtt benchmarks ({env_note()})", flush=True)
    for name in args.names or list(BENCHES):
        started = time.perf_counter()
        result = BENCHES[name](args.quick)
        result["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps({"bench": name, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
