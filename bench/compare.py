"""llm2mqtt next to the ten-line baseline (bench/naive.py), the same job as a Node-RED flow
(bench/nodered.py) and the floor (bench/floor.py: llm2mqtt's journal writes, fsync and
messages per job, with nothing else), measured the same way in the same run.

Each repetition starts a fresh broker (Mosquitto with a default configuration, or a tuned one),
a fresh instant-answering Ollama stand-in and one of the four bridges, then measures:

- the broker's own round trip at 50 messages/s, and each bridge's job round trip at 50 jobs/s
  (added latency = job round trip - broker round trip, p50 and p99);
- a burst of jobs: jobs/s, the bridge's CPU per job (user + system time of its process), and
  for llm2mqtt the MQTT messages it publishes per job (everything under the base topic) and
  the SQL statements its journal executes per job (bench/traced.py);
- saturation: jobs/s against a stand-in that takes 200 ms per answer and runs 2 at a time;
- losses: the job ids that got no result, over all of the above.

Systems are rotated per repetition (naive, Node-RED, floor, llm2mqtt; Node-RED, floor, llm2mqtt,
naive; ...),
so a change in the machine's load hits all alike; the load average is printed beside each run.
Without Node.js and npm (or the npm registry), Node-RED's column says why it was not measured.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import psutil
import yaml

from bench import nodered
from bench.common import TEXT_RULE, Client, median, percentile
from bench.spine import job_round_trips, plain_round_trips
from tests.support.mqtt_helpers import ROOT, Mosquitto
from tests.support.ollama_standin import OllamaStandin

System = Literal["naive", "nodered", "floor", "llm2mqtt"]
SYSTEMS: tuple[System, ...] = ("naive", "nodered", "floor", "llm2mqtt")
RESULT = "llm2mqtt/bench_text/result"
BrokerKind = Literal["default", "tuned", "nodelay", "inflight_0", "queued_0"]
BASE = "llm2mqtt/"
# Jobs a burst keeps unanswered at most: a default Mosquitto queues 1,000 messages per client
# (max_queued_messages) and drops QoS 1 messages beyond that, even for a persistent session.
WINDOW = 500

# What a packaged Mosquitto 2 does with a listener and nothing else set.
_DEFAULT_CONF = "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nlog_dest none\n"
# Together they send small packets at once (acks, results) and never drop queued QoS 1
# messages; `broker_settings` tries each alone on top of the default configuration.
_TUNED_LINES = {
    "nodelay": "set_tcp_nodelay true\n",
    "queued_0": "max_queued_messages 0\n",
    "inflight_0": "max_inflight_messages 0\n",
}
_CONFS: dict[str, str] = {
    "default": _DEFAULT_CONF,
    **{kind: _DEFAULT_CONF + line for kind, line in _TUNED_LINES.items()},
    "tuned": _DEFAULT_CONF + "".join(_TUNED_LINES.values()),
}


@dataclass
class Run:
    """One system measured once."""

    system: System
    figures: dict[str, float] = field(default_factory=dict)
    load: float = 0.0


class _JobClient(Client):
    """The timing client; remembers the jobs it sends, to count the ones never answered."""

    def __init__(self, port: int, topics: list[str]) -> None:
        super().__init__(port, topics)
        self.jobs: list[bytes | str] = []

    def publish(self, topic: str, payload: bytes | str) -> None:
        if topic == "bench/in":
            self.jobs.append(payload)  # parsed only by lost(), off the timed path
        super().publish(topic, payload)

    def lost(self) -> int:
        """Job ids sent (probes aside) that no result has carried."""
        sent = {json.loads(job)["id"] for job in self.jobs} - {"probe"}
        with self._lock:
            answered = {json.loads(body).get("id") for _, body in self.arrivals.get(RESULT, [])}
        return len(sent - answered)


def _broker(folder: Path, kind: BrokerKind) -> Mosquitto:
    broker = Mosquitto(folder / "mosquitto")
    broker.conf.write_text(_CONFS[kind].format(port=broker.port))
    return broker


def _config(
    folder: Path, broker: Mosquitto, standin: OllamaStandin, parallel: int, mqtt: dict[str, Any]
) -> Path:
    """The user's defaults (journal synchronous=full, Home Assistant discovery on), and `mqtt`."""
    (folder / "rules").mkdir(exist_ok=True)
    (folder / "rules" / "bench_text.yaml").write_text(yaml.safe_dump(TEXT_RULE))
    config = {
        "mqtt": {"url": broker.url, "client_id": "llm2mqtt-bench", **mqtt},
        "ollama": {"url": standin.url, "parallel": parallel, "timeout": 600},
        "log_level": "warning",
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def _python_bridge(
    system: System,
    folder: Path,
    broker: Mosquitto,
    standin: OllamaStandin,
    parallel: int,
    mqtt: dict[str, Any],
) -> Iterator[subprocess.Popen[bytes]]:
    """The naive script or the daemon (traced), running; stopped with SIGTERM after."""
    if system == "naive":
        command = [sys.executable, "-m", "bench.naive", str(broker.port), standin.url]
    elif system == "floor":
        journal = str(folder / "floor.sqlite3")
        command = [sys.executable, "-m", "bench.floor", str(broker.port), standin.url, journal]
    else:
        config = _config(folder, broker, standin, parallel, mqtt)
        command = [sys.executable, "-m", "bench.traced", "run", "-c", str(config)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (folder / "bridge.log").open("ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


@contextmanager
def _system(
    system: System, kind: BrokerKind, *, parallel: int = 1, latency: float = 0.0, mqtt: dict[str, Any]
) -> Iterator[tuple[psutil.Process, _JobClient, int, OllamaStandin]]:
    with tempfile.TemporaryDirectory(prefix="llm2mqtt-compare-") as tmp:
        folder = Path(tmp)
        broker = _broker(folder, kind)
        broker.start()
        standin = OllamaStandin(parallel=parallel, latency=latency, max_queue=100_000).start()
        bridge = (
            nodered.running(broker.port, standin.url, folder)
            if system == "nodered"
            else _python_bridge(system, folder, broker, standin, parallel, mqtt)
        )
        try:
            with bridge as proc:
                client = _JobClient(broker.port, [RESULT, f"{BASE}bridge/state", "bench/echo"])
                try:
                    if system == "llm2mqtt":
                        client.wait(f"{BASE}bridge/state", 1, 30)
                    else:
                        _wait_subscribed(client)
                    job_round_trips(client, 50, 0, "warm")  # imports, first connections, subscriptions
                    yield psutil.Process(proc.pid), client, broker.port, standin
                finally:
                    client.close()
        finally:
            standin.stop()
            broker.stop()


def _burst(client: Client, jobs: int, tag: str, window: int = WINDOW) -> float:
    """Send `jobs` as fast as they are taken, at most `window` unanswered; the wall time (s)."""
    before = client.count(RESULT)
    start = time.perf_counter()
    for i in range(jobs):
        if i >= window:
            client.wait(RESULT, before + i - window + 1, 120)
        client.publish("bench/in", json.dumps({"id": f"{tag}{i}", "text": f"buy item {tag}{i} for shopping"}))
    arrivals = _settled(client, before + jobs)
    return arrivals[-1][0] - start


def _settled(client: Client, count: int, quiet: float = 15.0) -> list[tuple[float, bytes]]:
    """The results once `count` have come, or once none came for `quiet` s (jobs were lost:
    `_JobClient.lost` counts them)."""
    while True:
        seen = client.count(RESULT)
        try:
            return client.wait(RESULT, count, quiet)
        except TimeoutError:
            if client.count(RESULT) == seen:
                with client._lock:
                    return list(client.arrivals[RESULT])


def _wait_subscribed(client: Client, timeout: float = 30) -> None:
    """Probe until the baseline answers: it keeps no session, so jobs sent earlier are lost."""
    topic = f"{BASE}bench_text/result"
    deadline = time.monotonic() + timeout
    while client.count(topic) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the baseline never answered")
        client.publish("bench/in", json.dumps({"id": "probe", "text": "probe"}))
        time.sleep(0.2)
    time.sleep(0.5)
    with client._lock:
        client.arrivals.pop(topic, None)  # round trips count from here


def _published(client: Client) -> int:
    """Messages under the base topic seen so far (results, states, events, discovery...)."""
    with client._lock:
        return sum(len(v) for topic, v in client.arrivals.items() if topic.startswith(BASE))


def overhead(
    system: System,
    kind: BrokerKind,
    *,
    jobs: int,
    paced: int,
    counted: int,
    profile: Path | None = None,
    mqtt: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Added latency at 50 jobs/s, burst throughput and CPU per job, writes and messages per job
    (`mqtt`: llm2mqtt's settings beside the user's defaults)."""
    with _system(system, kind, mqtt=mqtt or {}) as (proc, client, port, _standin):
        plain = plain_round_trips(client, paced, 50)
        paced_latency, _ = job_round_trips(client, paced, 50, "paced")
        spy = _py_spy(proc.pid, profile) if profile else None
        cpu, threads = proc.cpu_times(), _thread_cpu(proc)
        wall = _burst(client, jobs, "burst")
        after, threads_after = proc.cpu_times(), _thread_cpu(proc)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        used = (after.user + after.system) - (cpu.user + cpu.system)
        figures: dict[str, float] = {
            "cpu_ms_per_job": round(used / jobs * 1000, 2),
            # of which in the kernel (system calls: sockets, epoll, the journal's writes)
            "cpu_ms_per_job_kernel": round((after.system - cpu.system) / jobs * 1000, 2),
            "jobs_per_s": round(jobs / wall, 1),
            "added_p50_ms": round(median(paced_latency) - median(plain), 2),
            "added_p99_ms": round(percentile(paced_latency, 99) - percentile(plain, 99), 2),
            "broker_rtt_p99_ms": round(percentile(plain, 99), 2),
        }
        if system == "llm2mqtt":  # py-spy counts a thread blocked in fsync; this does not
            loop = threads_after.pop(proc.pid, 0.0) - threads.pop(proc.pid, 0.0)
            figures["cpu_ms_per_job_loop_thread"] = round(loop / jobs * 1000, 2)
            figures["cpu_ms_per_job_other_threads"] = round((used - loop) / jobs * 1000, 2)
        time.sleep(0.5)  # the last acks and deletes of the burst
        # Every message counted on a connection of its own, subscribed only now: a client that
        # takes every message under the base topic shares the cores with the bridge, and would
        # slow each system's burst by the messages it publishes per job (llm2mqtt five, the
        # others one), which is the bench's cost, not the bridge's. A subscriber to the QoS 0
        # events also delays its TCP acks, which would hold back the timing client's packets.
        counter = Client(port, [f"{BASE}#"])
        time.sleep(0.5)  # the retained messages (states, discovery) arrive first
        before = _published(counter)
        if system == "llm2mqtt":
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.2)
        _burst(client, counted, "counted")
        time.sleep(1.0)  # lazy commits, outbox deletes and QoS 0 events settle
        figures["messages_per_job"] = round((_published(counter) - before) / counted, 2)
        counter.close()
        figures["lost"] = client.lost()
        if system == "llm2mqtt":
            proc.send_signal(signal.SIGUSR2)
            time.sleep(0.3)
            config = Path(proc.cwd()) / "config.yaml"
            sql: dict[str, int] = json.loads((config.parent / "sql_counts.json").read_text())
            figures["fsyncs_per_job"] = round(sql.pop("fsync", 0) / counted, 2)
            writes = sum(n for k, n in sql.items() if k.split()[0] in ("INSERT", "UPDATE", "DELETE"))
            figures["sql_writes_per_job"] = round(writes / counted, 2)
            figures["sql_statements_per_job"] = round(sum(sql.values()) / counted, 2)
            figures["commits_per_job"] = round(sql.get("COMMIT", 0) / counted, 2)
            if profile is not None:  # which statements a job costs, beside the profile
                texts = json.loads((config.parent / "sql_texts.json").read_text())
                per_job = {text: round(n / counted, 2) for text, n in texts.items()}
                profile.with_suffix(".sql.json").write_text(json.dumps(per_job, indent=1))
    return figures


def _thread_cpu(proc: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) of each of the process's threads, by thread id."""
    return {t.id: t.user_time + t.system_time for t in proc.threads()}


def broker_settings(reps: int = 2, jobs: int = 2000) -> dict[str, Any]:
    """llm2mqtt's burst with the default broker and with each tuned line alone, rotated."""
    kinds = cast(list[BrokerKind], list(_CONFS))  # default, each line alone, all three
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for rep in range(reps):
        for kind in kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]:
            figures = overhead("llm2mqtt", kind, jobs=jobs, paced=100, counted=50)
            line = {"rep": rep, "broker": kind, "load1": os.getloadavg()[0], **figures}
            print(json.dumps(line), flush=True)
            runs[kind].append(figures)
    summary: dict[str, Any] = {"bench": "broker_settings", "reps": reps, "burst_jobs": jobs}
    for kind, figures in runs.items():
        for key in ("cpu_ms_per_job", "jobs_per_s", "added_p99_ms"):
            values = [f[key] for f in figures]
            summary[f"{kind}.{key}"] = {"median": median(values), "min": min(values)}
    return summary


def _py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling the process (collapsed stacks, busy threads only) until interrupted."""
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--format",
            "raw",
            "--threads",
            "--nonblocking",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached
    return spy


def saturation(system: System, kind: BrokerKind, *, jobs: int) -> dict[str, float]:
    """Jobs/s against a model that takes 200 ms and runs 2 at once, as a fraction of 10/s."""
    with _system(system, kind, parallel=2, latency=0.2, mqtt={}) as (_proc, client, _port, standin):
        standin.reset_stats()
        wall = _burst(client, jobs, "sat")
        peak = standin.peak_open
        lost = client.lost()
    # Requests open at once as the stand-in counts them on arrival (before its own limit of
    # 2): llm2mqtt must keep it at exactly 2; a bridge without a limit goes past it.
    return {"saturation": round(jobs / wall / 10.0, 3), "peak_open": peak, "lost": lost}


def measurable(table: dict[str, Any]) -> list[System]:
    """The systems this machine can run: Node-RED once installed, or in `table` why not."""
    systems = list(SYSTEMS)
    try:
        nodered.install()
    except nodered.NodeRedUnavailable as exc:
        table["nodered"] = f"not measured ({exc})"
        systems.remove("nodered")
    return systems


def compare(
    *, reps: int = 3, kind: BrokerKind = "default", jobs: int = 2000, paced: int = 500, sat_jobs: int = 100
) -> dict[str, Any]:
    """Repetitions of the systems, rotated; per figure the median and the min of each."""
    table: dict[str, Any] = {"broker": kind, "reps": reps, "burst_jobs": jobs}
    systems = measurable(table)
    runs: list[Run] = []
    for rep in range(reps):
        for system in systems[rep % len(systems) :] + systems[: rep % len(systems)]:
            run = Run(system, load=os.getloadavg()[0])
            run.figures = overhead(system, kind, jobs=jobs, paced=paced, counted=200)
            sat = saturation(system, kind, jobs=sat_jobs)
            run.figures |= {**sat, "lost": run.figures["lost"] + sat["lost"]}
            print(json.dumps({"rep": rep, "system": system, "load1": round(run.load, 2), **run.figures}))
            runs.append(run)
    for system in systems:
        mine = [r for r in runs if r.system == system]
        for name in mine[0].figures:
            values = [r.figures[name] for r in mine]
            table[f"{system}.{name}"] = {"median": round(median(values), 2), "min": min(values)}
            if name == "peak_open":
                table[f"{system}.{name}"]["max"] = max(values)
            if name == "lost":
                table[f"{system}.{name}"] = sum(values)  # every repetition's
        table[f"{system}.load1"] = [round(r.load, 2) for r in mine]
    for other in systems[:-1]:
        table[f"cpu_per_job.llm2mqtt_over_{other}"] = round(
            table["llm2mqtt.cpu_ms_per_job"]["median"] / table[f"{other}.cpu_ms_per_job"]["median"], 2
        )
    print(_markdown(table))
    return table


_ROWS = {
    "cpu_ms_per_job": "bridge CPU per job (ms)",
    "cpu_ms_per_job_kernel": "of which in the kernel (ms)",
    "cpu_ms_per_job_loop_thread": "of which the event loop's thread (ms)",
    "jobs_per_s": "jobs/s, burst",
    "added_p50_ms": "added latency p50 at 50 jobs/s (ms)",
    "added_p99_ms": "added latency p99 at 50 jobs/s (ms)",
    "saturation": "saturation (200 ms, parallel 2)",
    "peak_open": "peak open requests, median (max)",
    "messages_per_job": "MQTT messages per job",
    "fsyncs_per_job": "fsyncs per job, 200-job burst",
    "lost": "jobs lost (all repetitions)",
}
_NAMES = {"naive": "naive script", "nodered": "Node-RED", "floor": "floor", "llm2mqtt": "llm2mqtt"}


def _markdown(table: dict[str, Any]) -> str:
    """The figures as a Markdown table: median (min) per system, a column each."""
    header = f"| {table['broker']} broker | " + " | ".join(_NAMES.values()) + " |"
    lines = [header, "|---" * (len(SYSTEMS) + 1) + "|"]
    for name, label in _ROWS.items():
        cells = []
        for system in SYSTEMS:
            value = table.get(f"{system}.{name}", table.get(system, "–"))
            if isinstance(value, dict):
                value = f"{value['median']} ({value['max' if name == 'peak_open' else 'min']})"
            cells.append(str(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratios = [f"{k.rsplit('_', 1)[-1]} {v}" for k, v in table.items() if k.startswith("cpu_per_job.")]
    lines.append("llm2mqtt CPU per job over: " + (", ".join(ratios) or "–"))
    return "\n".join(lines)


def main() -> None:
    """`python -m bench.compare PROFILE [JOBS] [default|tuned]`: one llm2mqtt run, with py-spy
    on the daemon during the burst (py-spy must be on PATH), and where the time went."""
    from bench.profile_top import top

    out = Path(sys.argv[1])
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
    kind: BrokerKind = "tuned" if sys.argv[3:] == ["tuned"] else "default"
    print(
        json.dumps(
            {
                "load1": os.getloadavg()[0],
                **overhead("llm2mqtt", kind, jobs=jobs, paced=100, counted=200, profile=out),
            }
        )
    )
    for section, rows in top(out, 5).items():
        print(f"## {section}")
        for name, pct in rows:
            print(f"{pct:5.1f}%  {name}")
    print(f"## SQL statements per job ({out.with_suffix('.sql.json')})")
    for text, n in json.loads(out.with_suffix(".sql.json").read_text()).items():
        print(f"{n:5.2f}  {text[:150]}")


if __name__ == "__main__":
    main()
