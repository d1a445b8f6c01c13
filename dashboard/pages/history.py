"""History: who upgraded, cancelled or retried what, when and why, and whether upgrades helped.

Filters (dates in the user's time zone, action, user, category, text in the reason) drive four
charts aggregated in SQL by core.observe.history, a table of the newest matching changes (capped
at TABLE_LIMIT, paged in the browser; task ids link to the task) and a CSV download of every
matching row (up to EXPORT_LIMIT). Managers and admins only (view_history); every callback
re-checks it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
import plotly.io as pio
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from core.auth.permissions import Permission
from core.errors import SwitchyardError
from core.observe import history as core_history
from core.priority import PHASES
from core.timefmt import UTC, chart_time, when, zone
from dashboard.components.common import acting_user, short_id

PATH = "/history"
TITLE = "History"
PERMISSION = Permission.VIEW_HISTORY

TABLE_LIMIT = core_history.TABLE_LIMIT
EXPORT_LIMIT = core_history.EXPORT_LIMIT
DEFAULT_DAYS = 7
ACTION_COLORS = {
    "prioritize": "#0d6efd",
    "urgent": "#fd7e14",
    "critical": "#dc3545",
    "cancel": "#6c757d",
    "retry": "#20c997",
}
ACTIONS = list(core_history.ACTIONS)
# Zero is the lightest: a cell nobody touched reads as empty, the busiest as the darkest.
HEATMAP_COLORS = [[0.0, "#f8f9fa"], [0.15, "#c6dbef"], [0.5, "#4292c6"], [1.0, "#08306b"]]

FILTERS = [
    Input("history-from", "value"),
    Input("history-to", "value"),
    Input("history-action", "value"),
    Input("history-user", "value"),
    Input("history-category", "value"),
    Input("history-text", "value"),
]

COLUMNS = [
    {"field": "when", "headerName": "When", "minWidth": 170, "sortable": False},
    {
        "field": "task",
        "headerName": "Task",
        "minWidth": 100,
        "cellRenderer": "TaskLink",
        "cellRendererParams": {"idField": "task_id"},
    },
    {"field": "task_name", "headerName": "Name"},
    {"field": "category", "headerName": "Category"},
    {"field": "phase", "headerName": "Phase"},
    {"field": "action", "headerName": "Action", "maxWidth": 120},
    {"field": "from_priority", "headerName": "From", "maxWidth": 90},
    {"field": "to_priority", "headerName": "To", "maxWidth": 90},
    {"field": "changed_by", "headerName": "By"},
    {"field": "reason", "headerName": "Reason", "minWidth": 240, "flex": 2},
]


def matches(path: str) -> bool:
    return path == PATH


def _today() -> datetime:
    return datetime.now(timezone.utc)


def layout(ctx, user, path, query=None):
    today = _today().astimezone(zone(user.time_zone)).date()
    try:
        options = core_history.filter_options(ctx.db)
    except SwitchyardError:
        options = {"users": [], "categories": []}
    categories = sorted(set(options["categories"]) | set(ctx.runtime.settings.categories))
    filters = dbc.Row(
        [
            dbc.Col(
                [
                    dbc.Label(f"From ({user.time_zone})", html_for="history-from"),
                    dbc.Input(
                        id="history-from",
                        type="date",
                        value=(today - timedelta(days=DEFAULT_DAYS - 1)).isoformat(),
                        debounce=True,
                    ),
                ],
                md="auto",
            ),
            dbc.Col(
                [
                    dbc.Label("To (included)", html_for="history-to"),
                    dbc.Input(id="history-to", type="date", value=today.isoformat(), debounce=True),
                ],
                md="auto",
            ),
            dbc.Col(
                [
                    dbc.Label("Action", html_for="history-action"),
                    dcc.Dropdown(id="history-action", options=ACTIONS, placeholder="any action"),
                ],
                md=2,
            ),
            dbc.Col(
                [
                    dbc.Label("User", html_for="history-user"),
                    dcc.Dropdown(id="history-user", options=options["users"], placeholder="any user"),
                ],
                md=2,
            ),
            dbc.Col(
                [
                    dbc.Label("Category", html_for="history-category"),
                    dcc.Dropdown(id="history-category", options=categories, placeholder="any category"),
                ],
                md=2,
            ),
            dbc.Col(
                [
                    dbc.Label("Reason contains", html_for="history-text"),
                    dbc.Input(id="history-text", type="text", debounce=True, maxLength=200, placeholder="text"),
                ],
                md=2,
            ),
        ],
        className="g-3 mb-3 align-items-end",
    )

    def chart(title: str, graph_id: str, height: str = "300px"):
        return dbc.Card(
            [
                dbc.CardHeader(title),
                dbc.CardBody(
                    dcc.Loading(dcc.Graph(id=graph_id, config={"displayModeBar": False}, style={"height": height}))
                ),
            ]
        )

    return html.Div(
        [
            html.H1("History", className="h4 mb-1"),
            html.P("Upgrades, cancels and retries: who did what to which task, when and why.", className="text-muted"),
            filters,
            html.Div(id="history-errors"),
            html.P(id="history-summary", className="text-muted"),
            dbc.Row(
                [
                    dbc.Col(chart("Changes over time, by action", "history-over-time"), lg=7),
                    dbc.Col(chart("Changes by user", "history-by-user"), lg=5),
                ],
                className="g-3 mb-3",
            ),
            dbc.Row(
                [
                    dbc.Col(chart("Changes by category and phase", "history-by-category"), lg=5),
                    dbc.Col(
                        dbc.Card(
                            [
                                dbc.CardHeader("Queue wait of upgraded tasks: before vs after the upgrade"),
                                dbc.CardBody(
                                    [
                                        dcc.Loading(
                                            dcc.Graph(
                                                id="history-wait",
                                                config={"displayModeBar": False},
                                                style={"height": "260px"},
                                            )
                                        ),
                                        html.Div(id="history-wait-summary"),
                                    ]
                                ),
                            ]
                        ),
                        lg=7,
                    ),
                ],
                className="g-3 mb-3",
            ),
            dbc.Card(
                [
                    dbc.CardHeader(
                        dbc.Row(
                            [
                                dbc.Col(html.Span(id="history-table-caption")),
                                dbc.Col(
                                    [
                                        dbc.Button(
                                            "Download CSV",
                                            id="history-download",
                                            color="secondary",
                                            size="sm",
                                            title=f"every matching row, up to {EXPORT_LIMIT:,}",
                                        ),
                                        dcc.Download(id="history-download-data"),
                                    ],
                                    width="auto",
                                ),
                            ],
                            className="align-items-center",
                        )
                    ),
                    dbc.CardBody(
                        dag.AgGrid(
                            id="history-table",
                            columnDefs=COLUMNS,
                            rowData=[],
                            defaultColDef={"sortable": True, "resizable": True, "flex": 1, "minWidth": 90},
                            dashGridOptions={"pagination": True, "paginationPageSize": 50},
                            style={"height": "520px"},
                        )
                    ),
                ]
            ),
        ]
    )


def _filter(start_date, end_date, action, user, category, text, zone_name=UTC):
    return core_history.make_filter(start_date, end_date, action, user, category, text, zone_name)


def register_callbacks(app, ctx) -> None:
    @app.callback(
        Output("history-over-time", "figure"),
        Output("history-by-user", "figure"),
        Output("history-by-category", "figure"),
        Output("history-wait", "figure"),
        Output("history-wait-summary", "children"),
        Output("history-table", "rowData"),
        Output("history-table-caption", "children"),
        Output("history-summary", "children"),
        Output("history-errors", "children"),
        *FILTERS,
    )
    def refresh(start_date, end_date, action, user_name, category, text):
        user = acting_user()
        if not user.can(Permission.VIEW_HISTORY):
            raise PreventUpdate
        try:
            with ctx.gate.seat(user.username):
                return render(ctx, start_date, end_date, action, user_name, category, text, user.time_zone)
        except SwitchyardError as error:  # too many reads at once, the console busy
            return _failed(str(error))

    @app.callback(
        Output("history-download-data", "data"),
        Output("history-errors", "children", allow_duplicate=True),
        Input("history-download", "n_clicks"),
        *[State(i.component_id, i.component_property) for i in FILTERS],
        prevent_initial_call=True,
    )
    def download(n_clicks, start_date, end_date, action, user_name, category, text):
        user = acting_user()
        if not n_clicks or not user.can(Permission.VIEW_HISTORY):
            raise PreventUpdate
        try:
            f = _filter(start_date, end_date, action, user_name, category, text, user.time_zone)
            content = core_history.export_csv(ctx.db, f, limit=EXPORT_LIMIT)
        except SwitchyardError as error:
            return None, dbc.Alert(str(error), color="danger", className="py-2")
        stamp = _today().strftime("%Y%m%d-%H%M%S")
        return dcc.send_string(content, f"priority-history-{stamp}.csv", type="text/csv"), None


def render(ctx, start_date, end_date, action, user_name, category, text, zone_name=UTC):
    """The refresh callback's outputs for one set of filter values: charts, wait table, table rows,
    captions and errors."""
    try:
        f = _filter(start_date, end_date, action, user_name, category, text, zone_name)
        data = core_history.page(ctx.db, f, table_limit=TABLE_LIMIT)
    except SwitchyardError as error:
        return _failed(str(error))
    over_time, wait, table = data["over_time"], data["wait"], data["table"]
    total = table["total"]
    shown = len(table["rows"])
    caption = (
        f"Newest {shown:,} of {total:,} matching changes (the table is capped at {TABLE_LIMIT:,}; "
        "Download CSV has them all)"
        if total > shown
        else f"{total:,} matching change{'s' if total != 1 else ''}"
    )
    summary = f"{total:,} change{'s' if total != 1 else ''} match; times are {zone_name}."
    return (
        _over_time_figure(over_time, zone_name),
        _by_user_figure(data["by_user"]),
        _by_category_figure(data["by_category"]),
        _wait_figure(wait),
        _wait_table(wait),
        [_table_row(row, zone_name) for row in table["rows"]],
        caption,
        summary,
        None,
    )


def _table_row(row: dict, zone_name: str) -> dict:
    return {**row, "when": when(row["changed_at"], zone_name), "task": short_id(row["task_id"])}


def _failed(message: str):
    """The refresh callback's outputs when the page cannot be computed: empty charts, the reason."""
    empty = _empty_figure(message)
    alert = dbc.Alert(message, color="danger", className="py-2")
    return empty, empty, empty, empty, None, [], "", "", alert


# -- figures ------------------------------------------------------------------------------------


# Figures are plain dicts: building go.Figure objects (validation, a deep copy of the template
# per figure) cost more than the SQL behind them. The template is resolved once.
_TEMPLATE = pio.templates["plotly_white"].to_plotly_json()


def _figure(data: list[dict], **layout) -> dict:
    base = {
        "template": _TEMPLATE,
        "margin": {"l": 40, "r": 10, "t": 10, "b": 40},
        "legend": {"orientation": "h", "y": -0.2},
    }
    return {"data": data, "layout": {**base, **layout}}


def _empty_figure(text: str = "Nothing matches the filters.") -> dict:
    return _figure(
        [],
        annotations=[{"text": text, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper"}],
        xaxis={"visible": False},
        yaxis={"visible": False},
    )


def _count_axis(title: str | None, largest: int) -> dict:
    """An axis of counts: whole numbers only (plotly picks 0.5 steps for small ranges)."""
    axis: dict = {"tickformat": ",d", "rangemode": "tozero"}
    if title:
        axis["title"] = {"text": title}
    if largest <= 5:
        axis["dtick"] = 1
    return axis


def _stack_height(counts: list[tuple[object, int]]) -> int:
    """The tallest stack of a stacked bar chart: the largest sum of counts at one position."""
    totals: dict[object, int] = {}
    for position, n in counts:
        totals[position] = totals.get(position, 0) + n
    return max(totals.values(), default=0)


def _over_time_figure(data, zone_name: str = UTC) -> dict:
    points = data["points"]
    if not points:
        return _empty_figure()
    bars = []
    for action in ACTIONS:
        mine = [p for p in points if p["action"] == action]
        if mine:
            bars.append(
                {
                    "type": "bar",
                    "name": action,
                    "x": [chart_time(p["at"], zone_name) for p in mine],
                    "y": [p["count"] for p in mine],
                    "marker": {"color": ACTION_COLORS.get(action)},
                }
            )
    unit = "hour" if data["unit"] == "hour" else "day (UTC days)"
    return _figure(
        bars,
        barmode="stack",
        xaxis={"type": "date", "title": {"text": f"per {unit}"}},
        yaxis=_count_axis("changes", _stack_height([(p["at"], p["count"]) for p in points])),
    )


def _by_user_figure(rows) -> dict:
    if not rows:
        return _empty_figure()
    users: list[str] = []
    for row in rows:
        if row["user"] not in users:
            users.append(row["user"])
    users = users[:25]
    bars = []
    for action in ACTIONS:
        counts = {r["user"]: r["count"] for r in rows if r["action"] == action}
        if counts:
            bars.append(
                {
                    "type": "bar",
                    "orientation": "h",
                    "name": action,
                    "y": users,
                    "x": [counts.get(u, 0) for u in users],
                    "marker": {"color": ACTION_COLORS.get(action)},
                }
            )
    return _figure(
        bars,
        barmode="stack",
        xaxis=_count_axis("changes", _stack_height([(r["user"], r["count"]) for r in rows])),
        yaxis={"autorange": "reversed", "type": "category"},
    )


def _by_category_figure(rows) -> dict:
    if not rows:
        return _empty_figure()
    categories = sorted({r["category"] for r in rows})
    phases = [p for p in PHASES if any(r["phase"] == p for r in rows)]
    phases += sorted({r["phase"] for r in rows} - set(phases))
    counts = {(r["category"], r["phase"]): r["count"] for r in rows}
    z = [[counts.get((c, p), 0) for p in phases] for c in categories]
    largest = max(max(row) for row in z)
    heatmap = {
        "type": "heatmap",
        "z": z,
        "x": phases,
        "y": categories,
        "text": [[str(v) if v else "" for v in row] for row in z],
        "texttemplate": "%{text}",
        "colorscale": HEATMAP_COLORS,
        "zmin": 0,
        "zmax": max(largest, 1),
        "colorbar": {
            **{k: v for k, v in _count_axis(None, largest).items() if k != "rangemode"},
            "title": {"text": "changes", "side": "right"},
        },
        "hovertemplate": "%{y} · %{x}: %{z} changes<extra></extra>",
    }
    return _figure([heatmap], xaxis={"type": "category"}, yaxis={"type": "category"})


def _wait_figure(wait) -> dict:
    bins = wait["bins"]
    if not any(b["before"] or b["after"] for b in bins):
        return _empty_figure("No waits to show.")
    labels = [b["bin"] for b in bins]
    bars = [
        {"type": "bar", "name": "before upgrade", "x": labels, "y": [b["before"] for b in bins],
         "marker": {"color": "#6c757d"}},
        {"type": "bar", "name": "after upgrade (until started)", "x": labels, "y": [b["after"] for b in bins],
         "marker": {"color": "#198754"}},
    ]  # fmt: skip
    largest = max(max(b["before"], b["after"]) for b in bins)
    return _figure(bars, barmode="group", xaxis={"type": "category"}, yaxis=_count_axis("upgrades", largest))


def _duration(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _wait_table(wait):
    rows = wait["summary"]
    if not rows:
        return None
    return dbc.Table(
        [
            html.Thead(
                html.Tr(
                    [
                        html.Th("action"),
                        html.Th("upgrades"),
                        html.Th("avg wait before"),
                        html.Th("max before"),
                        html.Th("started"),
                        html.Th("avg wait after"),
                        html.Th("max after"),
                    ]
                )
            ),
            html.Tbody(
                [
                    html.Tr(
                        [
                            html.Td(r["action"]),
                            html.Td(r["upgrades"]),
                            html.Td(_duration(r["before_avg_s"])),
                            html.Td(_duration(r["before_max_s"])),
                            html.Td(r["after_n"]),
                            html.Td(_duration(r["after_avg_s"])),
                            html.Td(_duration(r["after_max_s"])),
                        ]
                    )
                    for r in rows
                ]
            ),
        ],
        size="sm",
        className="mb-0 mt-2",
        id="history-wait-table",
    )
