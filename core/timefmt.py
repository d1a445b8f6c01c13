"""Times as people and programs read them. Everything is UTC (docs/architecture.md)."""

from __future__ import annotations

from datetime import datetime, timezone


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with its offset, for JSON (None stays None)."""
    return value.isoformat() if value else None


def minute_text(value: datetime | None, empty: str = "never") -> str:
    """'2025-01-31 14:05 UTC', for tables people read."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if value else empty


def chart_time(value: datetime | str) -> str:
    """Naive UTC text for a chart's date axis (plotly.js does not read offsets)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M:%S")
