"""Seeing the system: logs, metrics, health, the overview snapshot, queue statistics and the
priority-history analytics."""
