"""Configuration: SWITCHYARD_* environment variables, read once into a typed object.

No other module reads os.environ; pass a Settings around instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from core.errors import InvalidInput
from core.priority import DEFAULT_CATEGORIES

PREFIX = "SWITCHYARD_"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    nats_url: str | None = None
    database_url: str | None = None
    stream_name: str = "SWITCHYARD_TASKS"
    stream_replicas: int = 1
    categories: tuple[str, ...] = DEFAULT_CATEGORIES
    lease_seconds: float = 30.0
    max_attempts: int = 3
    retry_backoff_seconds: float = 2.0
    retry_backoff_max_seconds: float = 300.0
    ack_wait_seconds: float = 30.0
    duplicate_window_seconds: float = 120.0
    relay_interval_seconds: float = 1.0
    reaper_interval_seconds: float = 2.0
    reconcile_interval_seconds: float = 30.0
    idle_resweep_seconds: float = 2.0
    broker_timeout_seconds: float = 5.0
    host: str = "127.0.0.1"
    port: int = 8050
    secret_key: str | None = None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'switchyard.db').resolve()}"

    @property
    def embedded_broker_url_file(self) -> Path:
        """Where an embedded nats-server writes its URL, so other processes find it."""
        return self.data_dir / "nats" / "url"

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **changes)


_FIELDS = {
    "DATA_DIR": ("data_dir", Path),
    "NATS_URL": ("nats_url", str),
    "DATABASE_URL": ("database_url", str),
    "STREAM_NAME": ("stream_name", str),
    "STREAM_REPLICAS": ("stream_replicas", int),
    "CATEGORIES": ("categories", lambda v: tuple(c.strip() for c in v.split(",") if c.strip())),
    "LEASE_SECONDS": ("lease_seconds", float),
    "MAX_ATTEMPTS": ("max_attempts", int),
    "RETRY_BACKOFF_SECONDS": ("retry_backoff_seconds", float),
    "RETRY_BACKOFF_MAX_SECONDS": ("retry_backoff_max_seconds", float),
    "ACK_WAIT_SECONDS": ("ack_wait_seconds", float),
    "DUPLICATE_WINDOW_SECONDS": ("duplicate_window_seconds", float),
    "RELAY_INTERVAL_SECONDS": ("relay_interval_seconds", float),
    "REAPER_INTERVAL_SECONDS": ("reaper_interval_seconds", float),
    "RECONCILE_INTERVAL_SECONDS": ("reconcile_interval_seconds", float),
    "IDLE_RESWEEP_SECONDS": ("idle_resweep_seconds", float),
    "BROKER_TIMEOUT_SECONDS": ("broker_timeout_seconds", float),
    "HOST": ("host", str),
    "PORT": ("port", int),
    "SECRET_KEY": ("secret_key", str),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from SWITCHYARD_* variables; malformed values raise InvalidInput."""
    environ = os.environ if environ is None else environ
    values: dict = {}
    for key, raw in environ.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        if name not in _FIELDS:
            continue
        attribute, convert = _FIELDS[name]
        if raw == "":
            continue
        try:
            values[attribute] = convert(raw)
        except ValueError:
            raise InvalidInput(f"{key}={raw!r} is not a valid {convert.__name__}") from None
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if settings.max_attempts < 1:
        raise InvalidInput("SWITCHYARD_MAX_ATTEMPTS must be at least 1")
    if settings.lease_seconds <= 0:
        raise InvalidInput("SWITCHYARD_LEASE_SECONDS must be positive")
    if not settings.categories:
        raise InvalidInput("SWITCHYARD_CATEGORIES must name at least one category")
    for category in settings.categories:
        if not category.isidentifier() or not category.islower():
            raise InvalidInput(f"category {category!r} must be a lower-case word (letters, digits, _)")
