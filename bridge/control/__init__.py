"""The control plane on MQTT: Zigbee2MQTT-style requests under `<base>/bridge/request/<name>`."""
