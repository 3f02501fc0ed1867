"""Home Assistant: MQTT discovery payloads (pure) and the extension that publishes them."""
