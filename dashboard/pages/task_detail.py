"""Task page (placeholder until it is built)."""

from __future__ import annotations

from dash import html

from core.permissions import Permission

PATH = "/tasks/"
TITLE = "Task"
PERMISSION = Permission.VIEW_TASKS


def matches(path: str) -> bool:
    return path.startswith("/tasks/") and len(path) > len("/tasks/")


def layout(ctx, user, path):
    return html.P("Coming soon.")


def register_callbacks(app, ctx) -> None:
    pass
