"""Overview: queued per bucket, the category x phase x bucket matrix with oldest ages, counts,
throughput over the last hour and the workers online. Refreshes every 2 s from the process's
shared snapshot."""

from __future__ import annotations

from datetime import datetime, timedelta

import dash_bootstrap_components as dbc
from dash import Input, Output, dcc, html

from core.auth.permissions import Permission
from core.priority import BUCKETS_IN_ORDER, PHASES
from core.timefmt import chart_time
from dashboard.components.common import acting_user

PATH = "/"
TITLE = "Overview"
PERMISSION = Permission.VIEW_DASHBOARD
REFRESH_MS = 2000
MINUTE_MS = 60_000


def matches(path: str) -> bool:
    return path in ("/", "/overview")


def layout(ctx, user, path):
    return html.Div(
        [
            dcc.Interval(id="overview-tick", interval=REFRESH_MS),
            html.Div(id="overview-errors"),
            dbc.Row(id="overview-cards", className="g-3 mb-3"),
            dbc.Row(
                [
                    dbc.Col(
                        dbc.Card(
                            [
                                dbc.CardHeader("Queued by category, phase and bucket (oldest wait)"),
                                dbc.CardBody(id="overview-matrix"),
                            ]
                        ),
                        lg=7,
                    ),
                    dbc.Col(
                        dbc.Card(
                            [
                                dbc.CardHeader("Finished per minute, last hour (UTC)"),
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
            dbc.Card([dbc.CardHeader("Workers online"), dbc.CardBody(id="overview-workers")]),
        ]
    )


def register_callbacks(app, ctx) -> None:
    @app.callback(
        Output("overview-cards", "children"),
        Output("overview-matrix", "children"),
        Output("overview-throughput", "figure"),
        Output("overview-workers", "children"),
        Output("overview-errors", "children"),
        Input("overview-tick", "n_intervals"),
    )
    def refresh(_n):
        acting_user()
        return render(ctx.snapshot.get())


def render(snapshot):
    """The refresh callback's outputs from one snapshot (cards, matrix, throughput, workers, errors)."""
    return (
        _cards(snapshot),
        _matrix(snapshot),
        _throughput(snapshot),
        _workers(snapshot),
        [dbc.Alert(e, color="warning", className="py-1") for e in snapshot["errors"]],
    )


def _card(label: str, value, extra_class: str = "", card_id: str | None = None):
    return dbc.Col(
        dbc.Card(
            dbc.CardBody(
                [html.Div(label, className="label"), html.Div(value, className=f"value {extra_class}", id=card_id)]
            ),
            className="metric-card",
        ),
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
        _card(f"Queued · {b.value}", buckets.get(b.value, "–"), f"bucket-{b.value}", f"queued-{b.value}")
        for b in BUCKETS_IN_ORDER
    ]
    cards += [
        _card("Running", status.get("running", "–"), card_id="count-running"),
        _card("Failed", status.get("failed", "–"), card_id="count-failed"),
        _card("Succeeded", status.get("succeeded", "–"), card_id="count-succeeded"),
    ]
    return cards


def _age(seconds) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _matrix(snapshot):
    database = snapshot.get("database") or {}
    cells = {(c["category"], c["phase"], c["bucket"]): c for c in database.get("cells", [])}
    categories = sorted({c for c, _, _ in cells})
    if not categories:
        return html.P("Nothing queued.", className="text-muted mb-0")
    header = html.Tr([html.Th("category · phase")] + [html.Th(b.value) for b in BUCKETS_IN_ORDER])
    rows = []
    for category in categories:
        for phase in PHASES:
            if not any((category, phase, b.value) in cells for b in BUCKETS_IN_ORDER):
                continue
            tds = [html.Td(f"{category} · {phase}")]
            for bucket in BUCKETS_IN_ORDER:
                cell = cells.get((category, phase, bucket.value))
                if cell is None:
                    tds.append(html.Td(""))
                    continue
                age = cell["oldest_age_seconds"] or 0
                warn = "age-alarm" if age > 600 else "age-warn" if age > 60 else ""
                tds.append(html.Td(f"{cell['queued']} ({_age(age)})", className=warn))
            rows.append(html.Tr(tds))
    return dbc.Table([html.Thead(header), html.Tbody(rows)], size="sm", className="matrix mb-0", id="queue-matrix")


def _throughput(snapshot):
    data = snapshot.get("throughput")
    if not data:  # the database was unreachable: still show the hour, empty
        end = datetime.fromisoformat(snapshot["taken_at"])
        data = {"start": (end - timedelta(hours=1)).isoformat(), "end": end.isoformat(), "minutes": []}
    centres = [chart_time(datetime.fromisoformat(m) + timedelta(seconds=30)) for m in data["minutes"]]
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
    hour = [chart_time(data["start"]), chart_time(data["end"])]
    return {
        "data": bars,
        "layout": {
            "barmode": "stack",
            "margin": {"l": 30, "r": 10, "t": 10, "b": 30},
            "legend": {"orientation": "h"},
            "uirevision": "keep",
            "xaxis": {"type": "date", "range": hour, "fixedrange": True},
            "yaxis": {"rangemode": "nonnegative", "fixedrange": True, **({} if peak else {"range": [0, 1]})},
        },
    }


def _workers(snapshot):
    return [_workers_died(snapshot.get("workers_died") or []), _workers_online(snapshot.get("workers", []))]


def _workers_died(died):
    """Workers that died of an error in the last hour: serve starts a new one; a `run.py worker`
    process is restarted by its supervisor."""
    if not died:
        return None
    items = [
        html.Li([html.Code(w["id"]), f" died at {(w['stopped_at'] or '')[11:19]} UTC: ", html.Span(w["error"] or "")])
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
