"""Node-RED as the third system of `python -m bench compare`: the naive script's job as a flow.

mqtt in (`bench/in`, QoS 1, parsed JSON) → function (the naive script's /api/chat body) →
http request (POST to the stand-in) → function (`{"id": …, **answer}`) → mqtt out (the result
topic, QoS 1), every node with the editor's defaults. Node-RED is installed from the npm
registry into ~/.cache/llm2mqtt-bench/ the first time (about 120 MB, half a minute) and run
from there with its own settings and flow file in a temporary folder; nothing of it is kept
in the repository.
"""

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The last 4.x: Node-RED 5 needs Node.js 22.9 or later; 4 runs on Node.js 18.5 and later.
VERSION = "4.1.15"
CACHE = Path.home() / ".cache" / "llm2mqtt-bench" / f"node-red-{VERSION}"
# What the mqtt-broker node logs once its connection is up (and its subscriptions sent).
CONNECTED = "Connected to broker"

# The naive script's request (bench/naive.py), in the flow's JavaScript.
_REQUEST = """msg.job = msg.payload;
msg.payload = {
    model: "qwen2.5:3b",
    messages: [{role: "user", content: "Which area? " + msg.job.text}],
    format: %s,
    options: {temperature: 0},
    stream: false
};
return msg;"""
_ANSWER = """msg.payload = Object.assign({id: msg.job.id}, JSON.parse(msg.payload.message.content));
return msg;"""
_SCHEMA = {"type": "object", "properties": {"label": {"enum": ["shopping", "chores", "security", "other"]}}}

# Quiet and closed: no editor or HTTP endpoints, no palette installs, no update checks.
_SETTINGS = """module.exports = {
    uiHost: "127.0.0.1",
    uiPort: 0,
    httpAdminRoot: false,
    httpNodeRoot: false,
    flowFile: "flows.json",
    credentialSecret: false,
    telemetry: {enabled: false, updateNotification: false},
    diagnostics: {enabled: false, ui: false},
    externalModules: {autoInstall: false, palette: {allowInstall: false}, modules: {allowInstall: false}},
    logging: {console: {level: "info", metrics: false, audit: false}}
};
"""


class NodeRedUnavailable(Exception):
    """Node-RED cannot run here; the message says why (for the table's "not measured (why)")."""


def install(cache: Path = CACHE) -> Path:
    """The red.js of Node-RED `VERSION` in `cache`, installed from the npm registry if absent."""
    red = cache / "node_modules" / "node-red" / "red.js"
    if red.is_file():
        return red
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise NodeRedUnavailable(f"{tool} is not on PATH")
    # Installed beside, then renamed: an interrupted install is never taken for a finished one.
    partial = cache.with_name(cache.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    command = ["npm", "install", "--prefix", str(partial), f"node-red@{VERSION}"]
    command += ["--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        raise NodeRedUnavailable(f"npm install node-red@{VERSION} took over 15 minutes") from None
    if done.returncode != 0 or not (partial / "node_modules" / "node-red" / "red.js").is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise NodeRedUnavailable(f"npm install node-red@{VERSION} failed: {last}")
    shutil.rmtree(cache, ignore_errors=True)
    partial.rename(cache)
    return red


def flows(broker_port: int, ollama_url: str) -> list[dict[str, Any]]:
    """The flow: one tab, the broker's config node and the five nodes of the job's path."""
    tab = "bench"
    wired = {"z": tab, "x": 0, "y": 0}
    return [
        {"id": tab, "type": "tab", "label": "llm2mqtt bench", "disabled": False, "info": ""},
        {
            "id": "broker",
            "type": "mqtt-broker",
            "name": "bench",
            "broker": "127.0.0.1",
            "port": str(broker_port),
            "clientid": "node-red-bench",
            "autoConnect": True,
            "usetls": False,
            "protocolVersion": "4",  # MQTT 3.1.1, as paho's default in the naive script
            "keepalive": "60",
            "cleansession": True,
            "autoUnsubscribe": True,
            "birthTopic": "",
            "closeTopic": "",
            "willTopic": "",
        },
        {
            "id": "job",
            "type": "mqtt in",
            **wired,
            "name": "job",
            "topic": "bench/in",
            "qos": "1",
            "datatype": "json",
            "broker": "broker",
            "nl": False,
            "rap": True,
            "rh": 0,
            "inputs": 0,
            "wires": [["request"]],
        },
        _function("request", _REQUEST % json.dumps(_SCHEMA), "chat"),
        {
            "id": "chat",
            "type": "http request",
            **wired,
            "name": "ollama chat",
            "method": "POST",
            "ret": "obj",
            "paytoqs": "ignore",
            "url": f"{ollama_url}/api/chat",
            "tls": "",
            "persist": False,
            "proxy": "",
            "insecureHTTPParser": False,
            "authType": "",
            "senderr": False,
            "headers": [],
            "wires": [["answer"]],
        },
        _function("answer", _ANSWER, "result"),
        {
            "id": "result",
            "type": "mqtt out",
            **wired,
            "name": "result",
            "topic": "llm2mqtt/bench_text/result",
            "qos": "1",
            "retain": "false",
            "respTopic": "",
            "contentType": "",
            "userProps": "",
            "correl": "",
            "expiry": "",
            "broker": "broker",
            "wires": [],
        },
    ]


def _function(node_id: str, code: str, to: str) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "function",
        "z": "bench",
        "x": 0,
        "y": 0,
        "name": node_id,
        "func": code,
        "outputs": 1,
        "timeout": 0,
        "noerr": 0,
        "initialize": "",
        "finalize": "",
        "libs": [],
        "wires": [[to]],
    }


@contextmanager
def running(broker_port: int, ollama_url: str, folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Node-RED's node process with the flow, once its broker connection is up; stopped after."""
    red = install()
    user_dir = folder / "node-red"
    user_dir.mkdir(parents=True, exist_ok=True)
    (user_dir / "settings.js").write_text(_SETTINGS)
    (user_dir / "flows.json").write_text(json.dumps(flows(broker_port, ollama_url), indent=1))
    log = folder / "node-red.log"
    node = shutil.which("node") or "node"
    command = [node, str(red), "--settings", str(user_dir / "settings.js"), "--userDir", str(user_dir)]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=folder)
    try:
        _wait_connected(proc, log, 60)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_connected(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Until the log says the broker node is connected; its tail in the error if it never does."""
    deadline = time.monotonic() + timeout
    while CONNECTED not in (text := log.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(text.splitlines()[-15:])
            state = f"exited with {proc.returncode}" if proc.returncode is not None else "timed out"
            raise NodeRedUnavailable(f"Node-RED {state} before connecting to the broker:\n{tail}")
        time.sleep(0.1)
