"""Overview: queued per bucket, the category x phase x bucket matrix with oldest ages, counts,
throughput over the last hour and the workers online. Refreshes every 2 s from the process's
shared snapshot."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import dash_bootstrap_components as dbc
from dash import Input, Output, dcc, html

from core.auth.permissions import Permission
from core.priority import BUCKETS_IN_ORDER, PHASES
from core.timefmt import UTC, ago, chart_time, clock
from dashboard.components.common import acting_user

PATH = "/"
TITLE = "Overview"
PERMISSION = Permission.VIEW_DASHBOARD
REFRESH_MS = 2000
WARN_SECONDS = 60
ALARM_SECONDS = 600
MINUTE_MS = 60_000


def matches(path: str) -> bool:
    return path in ("/", "/overview")


def layout(ctx, user, path, query=None):
    return html.Div(
        [
            dcc.Interval(id="overview-tick", interval=REFRESH_MS),
            html.Div(
                [html.H1("Overview", className="h4 mb-0 me-3"), html.Span(id="overview-updated", className="updated")],
                className="d-flex align-items-baseline mb-2",
            ),
            html.Div(id="overview-errors"),
            dbc.Row(id="overview-cards", className="g-3 mb-3"),
            dbc.Row(
                [
                    dbc.Col(
                        dbc.Card(
                            [
                                dbc.CardHeader("Queued by category, phase and bucket (the oldest has waited)"),
                                dbc.CardBody(id="overview-matrix"),
                            ]
                        ),
                        lg=7,
                    ),
                    dbc.Col(
                        dbc.Card(
                            [
                                dbc.CardHeader(f"Finished per minute, last hour ({user.time_zone})"),
                                dbc.CardBody(
                                    dcc.Graph(
                                        id="overview-throughput",
                                        config={"displayModeBar": False},
                                        style={"height": "260px"},
                                    )
                                ),
                            ]
                        ),
                        lg=5,
                    ),
                ],
                className="g-3 mb-3",
            ),
            dbc.Card([dbc.CardHeader("Workers"), dbc.CardBody(id="overview-workers")]),
        ]
    )


def register_callbacks(app, ctx) -> None:
    @app.callback(
        Output("overview-cards", "children"),
        Output("overview-matrix", "children"),
        Output("overview-throughput", "figure"),
        Output("overview-workers", "children"),
        Output("overview-errors", "children"),
        Output("overview-updated", "children"),
        Input("overview-tick", "n_intervals"),
    )
    def refresh(_n):
        user = acting_user()
        snapshot = ctx.snapshot.get()
        return (*render(snapshot, user.time_zone), f"Updated {clock(snapshot['taken_at'], user.time_zone)}")


def render(snapshot, zone: str = UTC):
    """The refresh callback's outputs from one snapshot (cards, matrix, throughput, workers, errors)."""
    return (
        _cards(snapshot),
        _matrix(snapshot),
        _throughput(snapshot, zone),
        _workers(snapshot, zone),
        [dbc.Alert(e, color="warning", className="py-1") for e in snapshot["errors"]],
    )


def tasks_link(**filters: str) -> str:
    """The Tasks page filtered like this (filters live in its URL)."""
    return "/tasks" + (f"?{urlencode(filters)}" if filters else "")


def _card(label: str, value, extra_class: str = "", card_id: str | None = None, href: str | None = None):
    card = dbc.Card(
        dbc.CardBody(
            [html.Div(label, className="label"), html.Div(value, className=f"value {extra_class}", id=card_id)]
        ),
        className="metric-card",
    )
    return dbc.Col(
        dcc.Link(card, href=href, className="metric-link", title="Show these tasks") if href else card,
        xs=6,
        md=4,
        xl=2,
    )


def _cards(snapshot):
    broker = snapshot.get("broker") or {}
    database = snapshot.get("database") or {}
    status = database.get("status", {})
    buckets = broker.get("buckets") or {}
    cards = [
        _card(
            f"Queued · {b.value}",
            buckets.get(b.value, "–"),
            f"bucket-{b.value}",
            f"queued-{b.value}",
            tasks_link(status="queued", bucket=b.value),
        )
        for b in BUCKETS_IN_ORDER
    ]
    cards += [
        _card(label, status.get(key, "–"), card_id=f"count-{key}", href=tasks_link(status=key))
        for label, key in (("Running", "running"), ("Failed", "failed"), ("Succeeded", "succeeded"))
    ]
    return cards


def _matrix(snapshot):
    database = snapshot.get("database") or {}
    cells = {(c["category"], c["phase"], c["bucket"]): c for c in database.get("cells", [])}
    categories = sorted({c for c, _, _ in cells})
    if not categories:
        return html.P("Nothing queued.", className="text-muted mb-0")
    header = html.Tr(
        [html.Th("category · phase", scope="col")] + [html.Th(b.value, scope="col") for b in BUCKETS_IN_ORDER]
    )
    rows = []
    for category in categories:
        for phase in PHASES:
            if not any((category, phase, b.value) in cells for b in BUCKETS_IN_ORDER):
                continue
            tds: list[Any] = [html.Th(f"{category} · {phase}", scope="row", className="fw-normal")]
            for bucket in BUCKETS_IN_ORDER:
                cell = cells.get((category, phase, bucket.value))
                if cell is None:
                    tds.append(html.Td(""))
                    continue
                age = cell["oldest_age_seconds"] or 0
                warn = "age-alarm" if age > ALARM_SECONDS else "age-warn" if age > WARN_SECONDS else ""
                href = tasks_link(status="queued", category=category, phase=phase, bucket=bucket.value)
                text = f"{cell['queued']:,} (waiting {ago(age)})"
                tds.append(html.Td(dcc.Link(text, href=href, title="Show these tasks"), className=warn))
            rows.append(html.Tr(tds))
    legend = html.P(
        [
            html.Span("oldest waited over a minute", className="legend age-warn px-1 me-2"),
            html.Span("over 10 minutes", className="legend age-alarm px-1"),
        ],
        className="small mt-2 mb-0 matrix",
    )
    table = dbc.Table([html.Thead(header), html.Tbody(rows)], size="sm", className="matrix mb-0", id="queue-matrix")
    return [table, legend]


def _throughput(snapshot, zone: str = UTC):
    data = snapshot.get("throughput")
    if not data:  # the database was unreachable: still show the hour, empty
        end = datetime.fromisoformat(snapshot["taken_at"])
        data = {"start": (end - timedelta(hours=1)).isoformat(), "end": end.isoformat(), "minutes": []}
    centres = [chart_time(datetime.fromisoformat(m) + timedelta(seconds=30), zone) for m in data["minutes"]]
    bars, peak = [], 0
    for status, color in (("succeeded", "#198754"), ("failed", "#dc3545")):
        counts = data.get(status, [])
        peak += max(counts, default=0)
        bars.append(
            {"type": "bar", "name": status, "x": centres, "y": counts, "marker": {"color": color},
             "width": MINUTE_MS * 0.85}
        )  # fmt: skip
    # A plain dict: a go.Figure (validation, a copy of the default template) cost more than the
    # rest of the refresh, which every open browser runs every 2 s.
    hour = [chart_time(data["start"], zone), chart_time(data["end"], zone)]
    return {
        "data": bars,
        "layout": {
            "barmode": "stack",
            "margin": {"l": 30, "r": 10, "t": 10, "b": 30},
            "legend": {"orientation": "h"},
            "uirevision": "keep",
            "xaxis": {"type": "date", "range": hour, "fixedrange": True},
            "yaxis": {
                "rangemode": "nonnegative",
                "fixedrange": True,
                "tickformat": "d",  # whole tasks: never "0.5"
                **({} if peak > 4 else {"dtick": 1}),
                **({} if peak else {"range": [0, 1]}),
            },
        },
    }


def _workers(snapshot, zone: str = UTC):
    return [_workers_died(snapshot.get("workers_died") or [], zone), _workers_online(snapshot.get("workers", []))]


def _workers_died(died, zone: str):
    """Workers that died of an error in the last hour: serve starts a new one; a `run.py worker`
    process is restarted by its supervisor."""
    if not died:
        return None
    items = [
        html.Li([html.Code(w["id"]), f" died at {clock(w['stopped_at'], zone)}: ", html.Span(w["error"] or "")])
        for w in died[:5]
    ]
    more = f" (and {len(died) - 5} more)" if len(died) > 5 else ""
    return dbc.Alert(
        [html.Strong(f"{len(died)} worker(s) died in the last hour{more}"), html.Ul(items, className="mb-0 small")],
        color="danger",
        className="py-2",
        id="workers-died",
    )


def _workers_online(workers):
    if not workers:
        return html.P("No worker has reported in the last 15 seconds.", className="text-muted mb-0", id="workers-none")
    return dbc.Table(
        [
            html.Thead(html.Tr([html.Th("worker"), html.Th("scope"), html.Th("concurrency"), html.Th("tasks run")])),
            html.Tbody(
                [
                    html.Tr([html.Td(w["id"]), html.Td(w["scope"]), html.Td(w["concurrency"]), html.Td(w["tasks_run"])])
                    for w in workers
                ]
            ),
        ],
        size="sm",
        className="mb-0",
        id="workers-table",
    )
