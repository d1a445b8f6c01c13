"""The web console. The full Dash console arrives with the console issue; until then a
placeholder page shows that the process is up, and exposes no task data."""

from __future__ import annotations

from flask import Flask

from core.runtime import Runtime
from core.settings import Settings


def create_app(settings: Settings, runtime: Runtime) -> Flask:
    server = Flask("switchyard")

    @server.get("/")
    def index() -> str:
        return (
            "<!doctype html><title>Switchyard</title><h1>Switchyard</h1>"
            "<p>The engine is running. Use <code>python run.py depths</code> for queue depths.</p>"
        )

    return server
