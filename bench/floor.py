"""The floor: llm2mqtt's outside work per job, and nothing else. `python -m bench.floor PORT OLLAMA_URL DB`.

What the daemon does per job on the wire and on disk, done the shortest way one thread can:

- the input comes at QoS 1 over MQTT 5 and is acknowledged by hand, only once the job is
  committed (here together with its result, which an instant model allows; the broker sends an
  unacknowledged input again after a crash);
- the journal is SQLite in WAL mode with `synchronous=FULL` (an fsync per commit): per job a
  row inserted and finished, and two outbox rows (result and state) written in the same commit
  and deleted, a batch at a time, once the broker has acknowledged them;
- one chat request over a keep-alive connection, its answer checked against the labels;
- five messages: the result and the state at QoS 1, three lifecycle events at QoS 0.

No event loop, queue, limits, retries, templates, metrics or Home Assistant: what is left is
what any bridge with these guarantees spends. `python -m bench compare` runs it beside the
others, so that llm2mqtt's CPU per job can be told apart into this floor and its own cost.
"""

import http.client
import json
import socket
import sqlite3
import sys
import time
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from bridge.pipeline.paho_socket import quick_ack

LABELS = ["shopping", "chores", "security", "other"]
SCHEMA = {"type": "object", "properties": {"label": {"enum": LABELS}}, "required": ["label"]}
TOPIC = "llm2mqtt/bench_text/"

port, url, path = int(sys.argv[1]), urlsplit(sys.argv[2]), sys.argv[3]
ollama = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 11434)
ollama.connect()  # kept open; http.client sends a request's headers and body apart, so no Nagle:
ollama.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, input BLOB, state TEXT, result TEXT)")
db.execute("CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, topic TEXT, payload TEXT)")
rows: dict[int, int] = {}  # outbox row by the message id of its QoS 1 publish
acked: list[int] = []  # outbox rows the broker has acknowledged, deleted with the next commit


def chat(text: str) -> str:
    messages = [{"role": "user", "content": f"Which area? {text}"}]
    body = {"model": "qwen2.5:3b", "messages": messages, "format": SCHEMA, "stream": False}
    ollama.request("POST", "/api/chat", json.dumps(body), {"Content-Type": "application/json"})
    answer = json.loads(json.loads(ollama.getresponse().read())["message"]["content"])
    if answer.get("label") not in LABELS:
        raise ValueError(f"not a label: {answer}")
    return str(answer["label"])


def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
    quick_ack(client)  # as the daemon does: Mosquitto holds its next small packet until then
    job = json.loads(message.payload)
    db.execute("BEGIN")
    row = db.execute("INSERT INTO jobs (input, state) VALUES (?, 'running')", (message.payload,)).lastrowid
    label = chat(job["text"])
    result = json.dumps({"job_id": row, "id": job["id"], "label": label, "ts": time.time()})
    db.execute("UPDATE jobs SET state = 'done', result = ? WHERE id = ?", (result, row))
    outputs = [(f"{TOPIC}result", result), (f"{TOPIC}state", label)]
    ids = [db.execute("INSERT INTO outbox (topic, payload) VALUES (?, ?)", o).lastrowid for o in outputs]
    if acked:
        db.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(acked))})", acked)
        acked.clear()
    db.execute("COMMIT")
    client.ack(message.mid, message.qos)
    for outbox_id, (topic, payload) in zip(ids, outputs, strict=True):
        rows[client.publish(topic, payload, qos=1).mid] = outbox_id
    for kind in ("job_queued", "job_started", "job_done"):
        client.publish("llm2mqtt/bridge/event", json.dumps({"type": kind, "job_id": row, "ts": time.time()}))


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)


def on_connect(client: mqtt.Client, *_: object) -> None:
    # Several small packets per job: without this, each after the first waits out Nagle.
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.subscribe("bench/in", 1)


client.on_connect = on_connect
client.on_message = on_message


def on_publish(client: mqtt.Client, userdata: object, mid: int, *_: object) -> None:
    if mid in rows:  # a result or a state (the QoS 0 events are reported once written)
        acked.append(rows.pop(mid))
        quick_ack(client)


client.on_publish = on_publish
client.connect("127.0.0.1", port)
client.loop_forever()
