"""The baseline: what one writes in ten lines without a journal. `python -m bench.naive PORT OLLAMA_URL`."""

import json
import sys

import ollama
import paho.mqtt.client as mqtt

llm = ollama.Client(host=sys.argv[2])
SCHEMA = {"type": "object", "properties": {"label": {"enum": ["shopping", "chores", "security", "other"]}}}


def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
    job = json.loads(message.payload)
    chat = [{"role": "user", "content": f"Which area? {job['text']}"}]
    reply = llm.chat(model="qwen2.5:3b", messages=chat, format=SCHEMA, options={"temperature": 0})
    answer = {"id": job["id"], **json.loads(reply.message.content)}
    client.publish("llm2mqtt/bench_text/result", json.dumps(answer), qos=1)


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client.on_connect = lambda c, *_: c.subscribe("bench/in", 1)
client.on_message = on_message
client.connect("127.0.0.1", int(sys.argv[1]))
client.loop_forever()
