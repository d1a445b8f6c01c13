"""Users page (placeholder until it is built)."""

from __future__ import annotations

from dash import html

from core.permissions import Permission

PATH = "/users"
TITLE = "Users"
PERMISSION = Permission.MANAGE_USERS


def matches(path: str) -> bool:
    return path == PATH


def layout(ctx, user, path):
    return html.P("Coming soon.")


def register_callbacks(app, ctx) -> None:
    pass
