"""Ollama away for a long time with jobs queued: none dead, all answered soon after it returns.

`python -m bench.outage_bench --down 600` is the proof run of the outage hold (half the outage
the stand-in refuses connections, the other half a proxy answers 502); `python -m bench outage`
runs it for 60 s.
"""

import argparse
import json
import time
from typing import Any

from bench.common import TEXT_RULE, Client, stack, wait_online

RESULTS = "llm2mqtt/bench_text/result"
HEALTH = "llm2mqtt/bridge/health"
EVENTS = "llm2mqtt/bridge/event"


def _health(client: Client) -> list[dict[str, Any]]:
    return [json.loads(payload)["backends"]["ollama"] for _, payload in client.arrivals.get(HEALTH, [])]


def outage(down: float = 600.0, jobs: int = 50) -> dict[str, Any]:
    """Stop the stand-in, queue `jobs`, keep it away `down` seconds, bring it back, time the rest."""
    with stack([TEXT_RULE], journal={"dedupe_window": 0}) as (broker, standin, daemon):
        client = Client(broker.port, ["llm2mqtt/bridge/state", RESULTS, HEALTH, EVENTS])
        wait_online(client)
        standin.stop()
        for i in range(jobs):
            client.publish("bench/in", json.dumps({"id": f"o{i}", "text": f"outage job {i}"}))
        time.sleep(down / 2)
        standin.bad_gateway = True
        standin.start()
        time.sleep(down / 2)
        seen_down = any(h["reachable"] is False for h in _health(client))
        standin.bad_gateway = False
        back = time.perf_counter()
        arrivals = client.wait(RESULTS, jobs, down + 120)
        last = arrivals[-1][0] - back
        first = arrivals[0][0] - back
        events = [json.loads(payload) for _, payload in client.arrivals.get(EVENTS, [])]
        output = daemon.output()
        client.close()
    answered = {json.loads(payload)["id"] for _, payload in arrivals}
    return {
        "outage_s": down,
        "jobs": jobs,
        "answered": len(answered),
        "dead_or_failed": sum(e["type"] == "job_failed" for e in events),
        "health_showed_unreachable": seen_down,
        "first_result_after_return_s": round(first, 1),
        "last_result_after_return_s": round(last, 1),
        "log_reminders": output.count("still waiting for"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.outage_bench")
    parser.add_argument("--down", type=float, default=600.0, help="seconds Ollama is away")
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps({"bench": "outage", **outage(args.down, args.jobs)}), flush=True)


if __name__ == "__main__":
    main()
