"""The compare benchmark's pure parts: the Node-RED flow's shape, its install without Node.js,
the table with a system that could not be measured, and strace's summary read by call."""

from pathlib import Path

import pytest

from bench import nodered
from bench.compare import _markdown
from bench.syscalls import summary


def test_the_flow_takes_the_job_path_of_the_naive_script() -> None:
    nodes = {n["id"]: n for n in nodered.flows(1883, "http://127.0.0.1:11434")}
    path, node = [], "job"
    while True:
        path.append(nodes[node]["type"])
        wires = nodes[node].get("wires", [])
        if not wires:
            break
        (node,) = wires[0]
    assert path == ["mqtt in", "function", "http request", "function", "mqtt out"]
    assert (nodes["job"]["topic"], nodes["job"]["qos"], nodes["job"]["datatype"]) == ("bench/in", "1", "json")
    assert (nodes["result"]["topic"], nodes["result"]["qos"]) == ("llm2mqtt/bench_text/result", "1")
    assert nodes["chat"]["url"] == "http://127.0.0.1:11434/api/chat"
    assert nodes["broker"]["port"] == "1883"
    assert nodes["job"]["broker"] == nodes["result"]["broker"] == "broker"


def test_without_node_the_install_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(nodered.NodeRedUnavailable, match="node is not on PATH"):
        nodered.install(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_system_not_measured_keeps_its_column_with_the_reason() -> None:
    table = {
        "broker": "default",
        "nodered": "not measured (node is not on PATH)",
        "cpu_per_job.llm2mqtt_over_naive": 3.1,
    }
    for system, cpu in (("naive", 0.5), ("llm2mqtt", 1.55)):
        table[f"{system}.cpu_ms_per_job"] = {"median": cpu, "min": cpu}
        table[f"{system}.lost"] = 0
    lines = _markdown(table).splitlines()
    why = "not measured (node is not on PATH)"
    assert lines[0] == "| default broker | naive script | Node-RED | llm2mqtt |"
    assert lines[2] == f"| bridge CPU per job (ms) | 0.5 (0.5) | {why} | 1.55 (1.55) |"
    assert f"| jobs lost (all repetitions) | 0 | {why} | 0 |" in lines
    assert lines[-1] == "llm2mqtt CPU per job over: naive 3.1"


def test_strace_summary_is_read_by_call_with_or_without_errors() -> None:
    text = """% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 65.60    3.645887         255     14294      1986 futex
  7.79    0.432718          14     30585           pwrite64
  0.00    0.000003           1         2           getsockname
------ ----------- ----------- --------- --------- ----------------
100.00    5.557391          60     44881      1986 total
"""
    assert summary(text) == {"futex": 14294, "pwrite64": 30585, "getsockname": 2}
