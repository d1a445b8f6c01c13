"""Times as people and programs read them. Stored and sent as UTC; the console shows each user
one format, `2026-12-01 14:05:07`, in their time zone (UTC or their browser's), and relative
ages ("6 min") where an operator decides on them."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import InvalidInput

UTC = "UTC"


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with its offset, for JSON (None stays None)."""
    return value.isoformat() if value else None


@lru_cache(maxsize=256)
def zone(name: str) -> tzinfo:
    """The zone of this IANA name (UTC for one that is not known here)."""
    if name == UTC:
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc


def check_zone(name: object) -> str:
    """An IANA zone name this machine knows, or InvalidInput."""
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise InvalidInput("a time zone is UTC or a name such as Europe/Paris")
    if name == UTC:
        return name
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {name[:64]!r}") from None
    return name


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def when(value: datetime | str | None, zone_name: str = UTC, empty: str = "–") -> str:
    """The one format the console shows a time in: `2026-12-01 14:05:07`, in the user's zone."""
    if value is None or value == "":
        return empty
    return _aware(value).astimezone(zone(zone_name)).strftime("%Y-%m-%d %H:%M:%S")


def clock(value: datetime | str | None, zone_name: str = UTC) -> str:
    """Just the time of day, `14:05:07` (\"last updated\")."""
    if value is None or value == "":
        return "–"
    return _aware(value).astimezone(zone(zone_name)).strftime("%H:%M:%S")


def ago(seconds: float | None) -> str:
    """A duration as people say it: `45 s`, `6 min`, `2 h 5 min`, `3 d 4 h`."""
    if seconds is None:
        return "–"
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 24:
        return f"{hours} h {minutes % 60} min" if minutes % 60 else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h" if hours % 24 else f"{hours // 24} d"


def chart_time(value: datetime | str, zone_name: str = UTC) -> str:
    """Naive text in the user's zone for a chart's date axis (plotly.js does not read offsets)."""
    return _aware(value).astimezone(zone(zone_name)).strftime("%Y-%m-%d %H:%M:%S")
