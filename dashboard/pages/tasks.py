"""Tasks: every task in an AG Grid (infinite row model over the database), filters above it,
and per-row actions (Prioritize / Urgent / Critical / Cancel / Retry).

Rows come from core.tasks.reads.list_tasks as the signed-in user; the actions a row offers are
computed there from its status and the user's permissions, and core checks the permission
again on every call, so the buttons are a convenience, never the check. The reason dialog,
the pending-action store and the result alert are the shared task-actions component.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from core.auth.permissions import Permission
from core.errors import SwitchyardError
from core.priority import BUCKETS_IN_ORDER, PHASES
from core.tasks import reads
from core.tasks.reads import COUNT_CAP, TaskFilters, TaskQuery, TaskStatus
from core.timefmt import ago, clock, when
from dashboard.components import task_actions
from dashboard.components.common import acting_user, address, short_id

PATH = "/tasks"
TITLE = "Tasks"
PERMISSION = Permission.VIEW_TASKS

GRID_ID = "tasks-grid"
PAGE_SIZE = 100
MAX_CURSORS = 200
MAX_BLOCK = 1000  # rows one request may ask for, whatever the browser says
REFRESH_MS = 2000
# Each button's width with its margin, measured in Chromium (assets/switchyard.css .task-actions).
BUTTON_WIDTHS = {"prioritize": 70, "urgent": 58, "critical": 59, "cancel": 87, "retry": 51}
CELL_PADDING = 36
URL_KEYS = {
    "tasks-filter-status": "status",
    "tasks-filter-bucket": "bucket",
    "tasks-filter-category": "category",
    "tasks-filter-phase": "phase",
}
FILTERS = [
    ("tasks-filter-status", "Status"),
    ("tasks-filter-bucket", "Bucket"),
    ("tasks-filter-category", "Category"),
    ("tasks-filter-phase", "Phase"),
]


def matches(path: str) -> bool:
    return path == PATH


def grid_row(row: dict[str, Any], user, now: datetime | None = None) -> dict[str, Any]:
    """A grid row: the task's summary, how the signed-in user reads its times, its actions."""
    now = now or datetime.now(timezone.utc)
    waiting = None
    if row["status"] == TaskStatus.QUEUED and row.get("queued_at"):
        waiting = ago((now - datetime.fromisoformat(row["queued_at"])).total_seconds())
    return {
        **row,
        "short_id": short_id(row["id"]),
        "where": f"{row['category']} · {row['phase']}",
        "created": when(row["created_at"], user.time_zone),
        "waiting": waiting,
        "actions": reads.allowed_actions(row["status"], row["priority"], user.permissions),
    }


def fetch_rows(
    ctx, user, request: dict | None, filters: TaskFilters, *, client: str | None = None, cursors: Any = None
) -> dict[str, Any]:
    """The grid's getRowsResponse for one getRowsRequest. A block that follows one this page
    served goes on from its last row (a cursor: keyset pagination), so scrolling deep costs what
    the first block costs; other blocks are offsets, which go up to reads.MAX_OFFSET. With more
    blocks to come, `cursor` holds (key, cursor) for the store the grid's callback keeps."""
    request = request if isinstance(request, dict) else {}
    start = _int(request.get("startRow"), 0)
    end = min(_int(request.get("endRow"), start + PAGE_SIZE), start + MAX_BLOCK)
    sort = request.get("sortModel")
    key = _cursor_key(filters, sort)
    cursor = cursors.get(f"{key}@{start}") if isinstance(cursors, dict) else None
    if not isinstance(cursor, str) and start > reads.MAX_OFFSET:
        return {"rowData": [], "rowCount": start}  # a jump no cursor leads to: the list ends here
    query = TaskQuery(filters, sort, 0 if isinstance(cursor, str) else start, max(end - start, 0), cursor)
    page = reads.list_tasks(ctx.db, user, query, address=client)
    total = page.total
    response: dict[str, Any] = {
        "rowData": [grid_row(r, user) for r in page.rows],
        "rowCount": -1 if total is None else total,
    }
    if page.next_cursor:
        response["cursor"] = (f"{key}@{start + len(page.rows)}", page.next_cursor)
    return response


def _cursor_key(filters: TaskFilters, sort: Any) -> str:
    """Which list a cursor belongs to: these filters, this sort."""
    text = json.dumps([list(asdict(filters).values()), sort if isinstance(sort, list) else []], default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def remember_cursor(cursors: Any, entry: tuple[str, str] | None) -> dict[str, str]:
    """The grid's cursor store with one more entry (the newest MAX_CURSORS are kept)."""
    kept = (
        {k: v for k, v in cursors.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(cursors, dict)
        else {}
    )
    if entry is not None:
        kept.pop(entry[0], None)
        kept[entry[0]] = entry[1]
    return dict(list(kept.items())[-MAX_CURSORS:])


def _int(value: Any, default: int) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError, OverflowError):
        return default


# -- layout ----------------------------------------------------------------------------------


def actions_width(permissions) -> int:
    """Pixels for the buttons this role can have on one row (0: none, the column is left out)."""
    queued = reads.allowed_actions("queued", 0, permissions)
    failed = reads.allowed_actions("failed", 0, permissions)
    widest = max(sum(BUTTON_WIDTHS[a] for a in queued), sum(BUTTON_WIDTHS[a] for a in failed), 0)
    return widest + CELL_PADDING if widest else 0


def column_defs(permissions) -> list[dict]:
    # Sortable: the columns db.queries.task_list.SORT_COLUMNS has an index order for. Category,
    # phase and bucket are filtered on instead (sorting a million rows on three values says little).
    # What an operator decides on first, so it stays in view on a narrow screen: which task, its
    # state, its priority, what it is; then how long it waited and where it runs.
    columns: list[dict] = [
        {"field": "short_id", "colId": "id", "headerName": "Id", "cellRenderer": "TaskLink", "width": 100},
        {"field": "status", "colId": "status", "headerName": "Status", "width": 108, "cellRenderer": "StatusBadge"},
        {
            "field": "priority",
            "colId": "priority",
            "headerName": "Priority",
            "width": 128,
            "valueFormatter": {"function": "params.data ? params.value + ' ' + params.data.priority_label : ''"},
        },
        {"field": "name", "colId": "name", "headerName": "Name", "flex": 1, "minWidth": 130},
        {"field": "waiting", "colId": "waiting", "headerName": "Waiting", "width": 88, "sortable": False},
        {"field": "created", "colId": "created", "headerName": "Created", "width": 166},
        {"field": "where", "colId": "where", "headerName": "Category · phase", "width": 146, "sortable": False},
        {"field": "bucket", "colId": "bucket", "headerName": "Bucket", "width": 82, "sortable": False},
        {
            "field": "attempts",
            "colId": "attempts",
            "headerName": "Attempts",
            "width": 90,
            "sortable": False,
            "valueFormatter": {"function": "params.data ? params.value + '/' + params.data.max_attempts : ''"},
        },
    ]
    width = actions_width(permissions)
    if width:
        columns.append(
            {
                "field": "actions",
                "colId": "actions",
                "headerName": "Actions",
                "cellRenderer": "TaskActions",
                "sortable": False,
                "width": width,
                "pinned": "right",
                "suppressKeyboardEvent": {"function": "keepTabInActions(params)"},
            }
        )
    return columns


def _values(query: dict | None, key: str) -> list[str]:
    """Filter values from the URL: ?status=queued&status=failed or ?status=queued,failed."""
    values = (query or {}).get(key) or []
    return [v for value in values for v in value.split(",") if v][:20]


def layout(ctx, user, path, query=None):
    categories = list(ctx.runtime.settings.categories)
    options = {
        "tasks-filter-status": list(TaskStatus.ALL),
        "tasks-filter-bucket": [b.value for b in BUCKETS_IN_ORDER],
        "tasks-filter-category": categories,
        "tasks-filter-phase": list(PHASES),
    }
    controls = [
        dbc.Col(
            [
                dbc.Label(label, html_for=control_id, className="visually-hidden"),
                dcc.Dropdown(
                    id=control_id,
                    options=[{"label": o, "value": o} for o in options[control_id]],
                    value=[v for v in _values(query, URL_KEYS[control_id]) if v in options[control_id]] or None,
                    multi=True,
                    placeholder=label,
                ),
            ],
            md=2,
        )
        for control_id, label in FILTERS
    ]
    text = (_values(query, "q") or [""])[0][:64]
    controls.append(
        dbc.Col(
            [
                dbc.Label("Search", html_for="tasks-filter-text", className="visually-hidden"),
                dbc.Input(
                    id="tasks-filter-text",
                    placeholder="Id, name or correlation id",
                    debounce=True,
                    maxLength=64,
                    type="search",
                    value=text or None,
                ),
            ],
            md=4,
        )
    )
    return html.Div(
        [
            html.Div(
                [
                    html.H1("Tasks", className="h4 mb-0 me-3"),
                    html.Span(id="tasks-updated", className="updated me-3"),
                    html.Span(f"times in {user.time_zone}", className="updated"),
                ],
                className="d-flex align-items-baseline mb-3",
            ),
            dbc.Row(controls, className="g-2 mb-2", id="tasks-filters"),
            html.Div(
                [
                    html.Span(id="tasks-count", className="text-muted small me-3"),
                    dbc.Button(
                        id="tasks-new", color="primary", size="sm", className="rounded-pill", style={"display": "none"}
                    ),
                ],
                className="d-flex align-items-center mb-1",
            ),
            task_actions.action_controls(),
            dcc.Interval(id="tasks-tick", interval=REFRESH_MS),
            dcc.Store(id="tasks-anchor", data=datetime.now(timezone.utc).isoformat()),
            dcc.Store(id="tasks-version"),
            dcc.Store(id="tasks-newest"),
            dcc.Store(id="tasks-grid-sink"),
            dcc.Store(id="tasks-refresh-sink"),
            dcc.Store(id="tasks-cursors", data={}),
            dag.AgGrid(
                id=GRID_ID,
                rowModelType="infinite",
                columnDefs=column_defs(user.permissions),
                defaultColDef={"sortable": True, "resizable": True, "suppressHeaderMenuButton": True},
                dashGridOptions={
                    "cacheBlockSize": PAGE_SIZE,
                    "maxBlocksInCache": 20,
                    "infiniteInitialRowCount": 1,
                    "maxConcurrentDatasourceRequests": 1,
                    "rowHeight": 34,
                },
                getRowId="params.data.id",
                style={"height": "70vh", "width": "100%"},
                className="ag-theme-alpine",
            ),
        ]
    )


# -- callbacks -------------------------------------------------------------------------------


def register_callbacks(app, ctx) -> None:
    # The shared dialog's own callbacks, once per app, under this page's permission (both task
    # pages show it; its confirmations are named tasks.reason_dialog in audit rows).
    task_actions.register_callbacks(app, ctx)
    serializer = task_actions.signer(app.server.secret_key)

    @app.callback(
        Output(GRID_ID, "getRowsResponse"),
        Output("tasks-count", "children"),
        Output("tasks-cursors", "data"),
        Input(GRID_ID, "getRowsRequest"),
        State("tasks-filter-status", "value"),
        State("tasks-filter-bucket", "value"),
        State("tasks-filter-category", "value"),
        State("tasks-filter-phase", "value"),
        State("tasks-filter-text", "value"),
        State("tasks-cursors", "data"),
        State("tasks-anchor", "data"),
        prevent_initial_call=True,
    )
    def get_rows(request, statuses, buckets, categories, phases, text, cursors, anchor):
        if not isinstance(request, dict):
            raise PreventUpdate
        user = acting_user()
        filters = TaskFilters.from_inputs(statuses, buckets, categories, phases, text, anchor)
        try:
            with ctx.gate.seat(user.username):
                response = fetch_rows(ctx, user, request, filters, client=address(), cursors=cursors)
        except SwitchyardError as error:  # too slow, too many at once, the database away
            return no_update, html.Span(str(error), className="text-danger"), no_update
        count = response["rowCount"]
        words = f"{count:,} matching" if count >= 0 else f"more than {COUNT_CAP:,} matching"
        return response, words, remember_cursor(cursors, response.pop("cursor", None))

    # Filters changed: the URL says so (a view can be shared and reloaded), and the grid drops
    # its cached blocks and asks again from the top.
    app.clientside_callback(
        """function(statuses, buckets, categories, phases, text) {
            var query = new URLSearchParams();
            [["status", statuses], ["bucket", buckets], ["category", categories], ["phase", phases]].forEach(
                function (pair) { if (pair[1] && pair[1].length) { query.set(pair[0], pair[1].join(",")); } });
            if (text) { query.set("q", text); }
            try { window.dash_ag_grid.getApi('tasks-grid').purgeInfiniteCache(); } catch (e) {}
            var search = query.toString();
            return search ? "?" + search : "";
        }""",
        Output("url", "search"),
        Input("tasks-filter-status", "value"),
        Input("tasks-filter-bucket", "value"),
        Input("tasks-filter-category", "value"),
        Input("tasks-filter-phase", "value"),
        Input("tasks-filter-text", "value"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output("tasks-updated", "children"),
        Output("tasks-new", "children"),
        Output("tasks-new", "style"),
        Output("tasks-version", "data"),
        Output("tasks-newest", "data"),
        Input("tasks-tick", "n_intervals"),
        State("tasks-filter-status", "value"),
        State("tasks-filter-bucket", "value"),
        State("tasks-filter-category", "value"),
        State("tasks-filter-phase", "value"),
        State("tasks-filter-text", "value"),
        State("tasks-anchor", "data"),
        prevent_initial_call=True,
    )
    def live(_n, statuses, buckets, categories, phases, text, anchor):
        """Every 2 s, from the shared snapshot: when something changed, the grid reloads the rows
        it shows (in place: its anchor keeps new tasks out), and new tasks are counted for the pill
        (only when the snapshot saw a task newer than the anchor)."""
        user = acting_user()
        snapshot = ctx.snapshot.get()
        filters = TaskFilters.from_inputs(statuses, buckets, categories, phases, text, anchor)
        database = snapshot.get("database") or {}
        newest = database.get("newest_created_at")
        newer: int | None = 0
        if newest and filters.created_before and datetime.fromisoformat(newest) > filters.created_before:
            try:
                newer = reads.count_newer(ctx.db, user, filters)
            except SwitchyardError:
                newer = 0
        pill_text: Any
        if newer == 0:
            pill_text, pill_style = no_update, {"display": "none"}
        else:
            count = f"{newer:,} new task{'s' if newer != 1 else ''}" if newer is not None else "1,000+ new tasks"
            pill_text, pill_style = f"{count}: show", {}
        version = json.dumps([database.get("status"), newest])
        return f"Updated {clock(snapshot['taken_at'], user.time_zone)}", pill_text, pill_style, version, newest

    # Something changed (the snapshot's counts): reload the visible rows in place.
    app.clientside_callback(
        """function(version) {
            try { window.dash_ag_grid.getApi('tasks-grid').refreshInfiniteCache(); } catch (e) {}
            return window.dash_clientside.no_update;
        }""",
        Output("tasks-refresh-sink", "data"),
        Input("tasks-version", "data"),
        prevent_initial_call=True,
    )

    # The pill: show the new tasks. The anchor moves to the newest task the server has seen (the
    # ones it counted; the browser's clock may differ); then the grid drops its blocks and goes
    # back to the top (it asks for rows with the new anchor).
    app.clientside_callback(
        """function(clicks, newest) {
            if (!clicks) { return [window.dash_clientside.no_update, window.dash_clientside.no_update]; }
            return [newest || new Date().toISOString(), {"display": "none"}];
        }""",
        Output("tasks-anchor", "data"),
        Output("tasks-new", "style", allow_duplicate=True),
        Input("tasks-new", "n_clicks"),
        State("tasks-newest", "data"),
        prevent_initial_call=True,
    )
    app.clientside_callback(
        """function(anchor) {
            try {
                var api = window.dash_ag_grid.getApi('tasks-grid');
                api.purgeInfiniteCache();
                api.ensureIndexVisible(0, 'top');
            } catch (e) {}
            return window.dash_clientside.no_update;
        }""",
        Output("tasks-grid-sink", "data"),
        Input("tasks-anchor", "data"),
        prevent_initial_call=True,
    )

    # An action went through (on this page): reload the visible rows so they show it.
    app.clientside_callback(
        """function(done) {
            if (done) { try { window.dash_ag_grid.getApi('tasks-grid').refreshInfiniteCache(); } catch (e) {} }
            return window.dash_clientside.no_update;
        }""",
        Output("task-action-sink", "data"),
        Input("task-action-done", "data"),
        prevent_initial_call=True,
    )

    @app.callback(*task_actions.SHARED_OUTPUTS, Input(GRID_ID, "cellRendererData"), prevent_initial_call=True)
    def grid_action(data):
        # Guard on the triggering value: a re-render carries no click (docs/architecture.md, "Dash traps").
        value = (data or {}).get("value") if isinstance(data, dict) else None
        if not isinstance(value, dict) or not value.get("nonce"):
            raise PreventUpdate
        return task_actions.request_action(
            ctx, serializer, acting_user(), value.get("task_id"), value.get("action"), client=address()
        )
