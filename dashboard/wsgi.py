"""The WSGI application for gunicorn, which runs several web processes:

    gunicorn -c python:dashboard.gunicorn_conf dashboard.wsgi:application

Each process builds its own app (no preload): its own database pool, NATS connection and
overview snapshot. Settings come from the SWITCHYARD_* variables, as for `run.py serve`.
Unlike `serve`, this starts no broker and creates no first admin: use `run.py users create`.
"""

from __future__ import annotations

from core.runtime import Runtime
from core.settings import load_settings
from dashboard.app import create_app


def build():
    settings = load_settings()
    runtime = Runtime.open(settings, require_broker=True)
    return create_app(settings, runtime).server


application = build()
