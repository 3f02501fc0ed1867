"""The compare benchmark's pure parts: the Node-RED flow's shape, its install without Node.js,
the table with a system that could not be measured, and strace's summary read by call."""

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from bench import nodered
from bench.compare import _markdown
from bench.syscalls import summary
from bench.wal_pages import by_owner, frames, owners


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
    assert lines[0] == "| default broker | naive script | Node-RED | floor | llm2mqtt |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2] == f"| bridge CPU per job (ms) | 0.5 (0.5) | {why} | – | 1.55 (1.55) |"
    assert f"| jobs lost (all repetitions) | 0 | {why} | – | 0 |" in lines
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


def test_wal_frames_are_read_per_commit_and_named_by_their_table(tmp_path: Path) -> None:
    """A WAL that SQLite wrote: two commits after the schema's, and a third torn midway."""
    path = tmp_path / "w.sqlite3"
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("CREATE TABLE t (x)")
        db.execute("CREATE INDEX t_x ON t (x)")
        for value in ("a", "b"):
            db.execute("INSERT INTO t VALUES (?)", (value,))
        wal = (tmp_path / "w.sqlite3-wal").read_bytes()
        salts, found = frames(wal)
        assert [ends for _, ends in found].count(True) == 4  # table, index, two inserts
        page_size = 4096
        last = wal[-(24 + page_size) :]
        unfinished = last[:4] + b"\0\0\0\0" + last[8:]  # a frame of a commit not written whole
        assert frames(wal + unfinished) == (salts, found)
        assert frames(wal + last[: 24 + page_size // 2]) == (salts, found)  # a frame cut short
        names = owners(path)
    assert names[1] == "sqlite_schema"
    table = by_owner(found[-2:], names)  # the last insert: its table page and its index page
    assert table == {"commits": 1, "frames_per_commit": 2.0, "t": 1.0, "t_x": 1.0}
