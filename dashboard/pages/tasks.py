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
from dashboard.components import task_actions
from dashboard.components.common import acting_user, address

PATH = "/tasks"
TITLE = "Tasks"
PERMISSION = Permission.VIEW_TASKS

GRID_ID = "tasks-grid"
PAGE_SIZE = 100
MAX_BLOCK = 1000  # rows one request may ask for, whatever the browser says
MAX_CURSORS = 200
FILTERS = [
    ("tasks-filter-status", "Status"),
    ("tasks-filter-bucket", "Bucket"),
    ("tasks-filter-category", "Category"),
    ("tasks-filter-phase", "Phase"),
]


def matches(path: str) -> bool:
    return path == PATH


def grid_row(row: dict[str, Any], permissions) -> dict[str, Any]:
    return {**row, "actions": reads.allowed_actions(row["status"], row["priority"], permissions)}


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
        "rowData": [grid_row(r, user.permissions) for r in page.rows],
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


def column_defs() -> list[dict]:
    # Sortable: the columns db.queries.SORT_COLUMNS has an index order for. Category, phase and
    # bucket are filtered on instead (sorting a million rows on three values says little).
    return [
        {"field": "id", "colId": "id", "headerName": "Id", "cellRenderer": "TaskLink", "width": 230},
        {
            "field": "created_at",
            "colId": "created",
            "headerName": "Created (UTC)",
            "width": 190,
            "valueFormatter": {"function": "params.value ? params.value.slice(0, 19).replace('T', ' ') : ''"},
        },
        {
            "field": "priority",
            "colId": "priority",
            "headerName": "Priority",
            "width": 130,
            "valueFormatter": {"function": "params.data ? params.value + ' · ' + params.data.priority_label : ''"},
        },
        {"field": "status", "colId": "status", "headerName": "Status", "width": 110},
        {"field": "name", "colId": "name", "headerName": "Name", "flex": 1, "minWidth": 150},
        {"field": "category", "colId": "category", "headerName": "Category", "width": 110, "sortable": False},
        {"field": "phase", "colId": "phase", "headerName": "Phase", "width": 110, "sortable": False},
        {"field": "bucket", "colId": "bucket", "headerName": "Bucket", "width": 100, "sortable": False},
        {
            "field": "attempts",
            "colId": "attempts",
            "headerName": "Attempts",
            "width": 105,
            "sortable": False,
            "valueFormatter": {"function": "params.data ? params.value + '/' + params.data.max_attempts : ''"},
        },
        {
            "field": "actions",
            "colId": "actions",
            "headerName": "Actions",
            "cellRenderer": "TaskActions",
            "sortable": False,
            "minWidth": 330,
            "pinned": "right",
        },
    ]


def layout(ctx, user, path):
    categories = list(ctx.runtime.settings.categories)
    options = {
        "tasks-filter-status": list(TaskStatus.ALL),
        "tasks-filter-bucket": [b.value for b in BUCKETS_IN_ORDER],
        "tasks-filter-category": categories,
        "tasks-filter-phase": list(PHASES),
    }
    controls = [
        dbc.Col(
            dcc.Dropdown(
                id=control_id,
                options=[{"label": o, "value": o} for o in options[control_id]],
                multi=True,
                placeholder=label,
            ),
            md=2,
        )
        for control_id, label in FILTERS
    ]
    controls.append(
        dbc.Col(
            dbc.Input(
                id="tasks-filter-text",
                placeholder="Id prefix, name or correlation id",
                debounce=True,
                maxLength=64,
                type="search",
            ),
            md=4,
        )
    )
    return html.Div(
        [
            html.H1("Tasks", className="h4 mb-3"),
            dbc.Row(controls, className="g-2 mb-2", id="tasks-filters"),
            html.Div(id="tasks-count", className="text-muted small mb-1"),
            task_actions.action_controls(),
            dcc.Store(id="tasks-grid-sink"),
            dcc.Store(id="tasks-cursors", data={}),
            dag.AgGrid(
                id=GRID_ID,
                rowModelType="infinite",
                columnDefs=column_defs(),
                defaultColDef={"sortable": True, "resizable": True, "suppressHeaderMenuButton": True},
                dashGridOptions={
                    "cacheBlockSize": PAGE_SIZE,
                    "maxBlocksInCache": 20,
                    "infiniteInitialRowCount": 1,
                    "maxConcurrentDatasourceRequests": 1,
                    "rowHeight": 34,
                    "suppressCellFocus": True,
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
        prevent_initial_call=True,
    )
    def get_rows(request, statuses, buckets, categories, phases, text, cursors):
        if not isinstance(request, dict):
            raise PreventUpdate
        user = acting_user()
        filters = TaskFilters.from_inputs(statuses, buckets, categories, phases, text)
        try:
            with ctx.gate.seat(user.username):
                response = fetch_rows(ctx, user, request, filters, client=address(), cursors=cursors)
        except SwitchyardError as error:  # too slow, too many at once, the database away
            return no_update, html.Span(str(error), className="text-danger"), no_update
        count = response["rowCount"]
        words = f"{count:,} matching" if count >= 0 else f"more than {COUNT_CAP:,} matching"
        return response, words, remember_cursor(cursors, response.pop("cursor", None))

    # Filters changed: drop the grid's cached blocks; it asks for rows again (with the new filters).
    app.clientside_callback(
        """function() {
            try { window.dash_ag_grid.getApi('tasks-grid').purgeInfiniteCache(); } catch (e) {}
            return window.dash_clientside.no_update;
        }""",
        Output("tasks-grid-sink", "data"),
        Input("tasks-filter-status", "value"),
        Input("tasks-filter-bucket", "value"),
        Input("tasks-filter-category", "value"),
        Input("tasks-filter-phase", "value"),
        Input("tasks-filter-text", "value"),
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
