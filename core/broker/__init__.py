"""The broker: the only code that imports nats-py. Messages and subjects, JetStream (stream,
consumers, publish, pull, delete, depths) and the embedded nats-server."""
