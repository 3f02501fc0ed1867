"""llm2mqtt: a home Ollama server as a job engine for MQTT, SQS and schedules."""

__version__ = "0.1.0"
