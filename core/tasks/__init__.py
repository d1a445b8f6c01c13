"""Tasks: what callers ask for and what they read. Dispatch, upgrade, cancel and retry
(service), validating and building rows (rows), the outbox that publishes after commit, the
task registry and the built-in tasks, authorized reads for the console and the API, and demo
traffic."""
