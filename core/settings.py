"""Configuration: SWITCHYARD_* environment variables, read once into a typed object.

No other module reads os.environ; pass a Settings around instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from core.errors import InvalidInput
from core.priority import DEFAULT_CATEGORIES

PREFIX = "SWITCHYARD_"
ENVIRONMENTS = ("development", "production")


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
    worker_prefetch: int = 32
    task_modules: tuple[str, ...] = ()
    log_format: str = "json"
    log_level: str = "info"
    metrics_token: str | None = None
    worker_metrics_port: int = 0
    web_processes: int = 2
    web_threads: int = 8
    broker_timeout_seconds: float = 5.0
    host: str = "127.0.0.1"
    port: int = 8050
    secret_key: str | None = None
    # Security (docs/reliability.md, "Security"): production refuses to start without a strong
    # secret key; proxies are trusted for X-Forwarded-* only when counted here.
    env: str = "development"
    trusted_proxies: int = 0
    login_max_failures: int = 5
    login_max_failures_per_address: int = 20
    login_window_seconds: float = 900.0
    session_idle_seconds: float = 8 * 3600.0
    session_max_seconds: float = 7 * 86400.0
    # Every read a person or a service asks for is stopped after this long (a clear 503).
    read_timeout_seconds: float = 5.0

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'switchyard.db').resolve()}"

    @property
    def embedded_broker_url_file(self) -> Path:
        """Where an embedded nats-server writes its URL, so other processes find it."""
        return self.data_dir / "nats" / "url"


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DATA_DIR": ("data_dir", Path),
    "NATS_URL": ("nats_url", str),
    "DATABASE_URL": ("database_url", str),
    "STREAM_NAME": ("stream_name", str),
    "STREAM_REPLICAS": ("stream_replicas", int),
    "CATEGORIES": ("categories", _names),
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
    "WORKER_PREFETCH": ("worker_prefetch", int),
    "TASK_MODULES": ("task_modules", _names),
    "LOG_FORMAT": ("log_format", str),
    "LOG_LEVEL": ("log_level", str),
    "METRICS_TOKEN": ("metrics_token", str),
    "WORKER_METRICS_PORT": ("worker_metrics_port", int),
    "WEB_PROCESSES": ("web_processes", int),
    "WEB_THREADS": ("web_threads", int),
    "BROKER_TIMEOUT_SECONDS": ("broker_timeout_seconds", float),
    "HOST": ("host", str),
    "PORT": ("port", int),
    "SECRET_KEY": ("secret_key", str),
    "ENV": ("env", str),
    "TRUSTED_PROXIES": ("trusted_proxies", int),
    "LOGIN_MAX_FAILURES": ("login_max_failures", int),
    "LOGIN_MAX_FAILURES_PER_ADDRESS": ("login_max_failures_per_address", int),
    "LOGIN_WINDOW_SECONDS": ("login_window_seconds", float),
    "SESSION_IDLE_SECONDS": ("session_idle_seconds", float),
    "SESSION_MAX_SECONDS": ("session_max_seconds", float),
    "READ_TIMEOUT_SECONDS": ("read_timeout_seconds", float),
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
            raise InvalidInput(f"{key}={raw!r} is not a valid {getattr(convert, '__name__', 'value')}") from None
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(settings: Settings) -> None:
    if settings.env not in ENVIRONMENTS:
        raise InvalidInput(f"SWITCHYARD_ENV must be {' or '.join(ENVIRONMENTS)}, not {settings.env!r}")
    if not 0 <= settings.trusted_proxies <= 10:
        raise InvalidInput("SWITCHYARD_TRUSTED_PROXIES must be the number of proxies in front of the console, 0-10")
    if settings.login_max_failures < 1 or settings.login_max_failures_per_address < 1:
        raise InvalidInput("SWITCHYARD_LOGIN_MAX_FAILURES and ..._PER_ADDRESS must be at least 1")
    if settings.login_window_seconds <= 0:
        raise InvalidInput("SWITCHYARD_LOGIN_WINDOW_SECONDS must be positive")
    if not 0 < settings.session_idle_seconds <= settings.session_max_seconds:
        raise InvalidInput(
            "SWITCHYARD_SESSION_IDLE_SECONDS must be positive and at most SWITCHYARD_SESSION_MAX_SECONDS"
        )
    if not 0.1 <= settings.read_timeout_seconds <= 600:
        raise InvalidInput("SWITCHYARD_READ_TIMEOUT_SECONDS must be from 0.1 to 600")
    if settings.max_attempts < 1:
        raise InvalidInput("SWITCHYARD_MAX_ATTEMPTS must be at least 1")
    if settings.log_format not in ("json", "text"):
        raise InvalidInput("SWITCHYARD_LOG_FORMAT must be json or text")
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise InvalidInput("SWITCHYARD_LOG_LEVEL must be debug, info, warning or error")
    if not 0 <= settings.worker_metrics_port <= 65535:
        raise InvalidInput("SWITCHYARD_WORKER_METRICS_PORT must be a port number (0: off)")
    if not 1 <= settings.web_processes <= 64 or not 1 <= settings.web_threads <= 256:
        raise InvalidInput("SWITCHYARD_WEB_PROCESSES must be 1-64 and SWITCHYARD_WEB_THREADS 1-256")
    if not 1 <= settings.worker_prefetch <= 1000:
        raise InvalidInput("SWITCHYARD_WORKER_PREFETCH must be from 1 to 1000")
    if settings.lease_seconds <= 0:
        raise InvalidInput("SWITCHYARD_LEASE_SECONDS must be positive")
    if not settings.categories:
        raise InvalidInput("SWITCHYARD_CATEGORIES must name at least one category")
    for category in settings.categories:
        if not category.isidentifier() or not category.islower():
            raise InvalidInput(f"category {category!r} must be a lower-case word (letters, digits, _)")
