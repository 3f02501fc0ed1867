"""The job pipeline: MQTT link, payloads, intake, journal, queue, runner, images, backend, outbox."""
