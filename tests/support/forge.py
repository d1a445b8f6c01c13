"""Forged console requests for the security suite: sign-ins through the real form, callback
requests built from the app's own /_dash-dependencies, and a snapshot of everything a request
could change (every table, the stream)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from db.models import AuditLog, Base
from tests.support.constants import PASSWORD

UPDATE = "/_dash-update-component"
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|\bline \d+, in\b")


def form_token(client, path: str = "/login", **kwargs) -> str:
    page = client.get(path, **kwargs).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def sign_in(client, username: str, password: str = PASSWORD, **kwargs):
    token = form_token(client)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token}, **kwargs)


def csrf_cookie(client) -> str:
    cookie = client.get_cookie("_csrf_token")
    return cookie.value if cookie else ""


def pattern_key(component_id: dict) -> str:
    """Dash's string form of a pattern-matching id (sorted keys, no spaces)."""
    return json.dumps(component_id, sort_keys=True, separators=(",", ":"))


def split_outputs(output: str) -> list[dict]:
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    return [dict(zip(("id", "property"), part.rsplit(".", 1))) for part in parts]


@dataclass
class Callback:
    """One server callback as /_dash-dependencies describes it."""

    dependency: dict
    name: str = ""  # the app's policy name, e.g. tasks.grid_action
    action: bool = False
    permission: Any = None

    @property
    def output(self) -> str:
        return self.dependency["output"]

    def slots(self) -> list[tuple[str, str, str]]:
        """(kind, id, property) of every input and state."""
        return [("inputs", i["id"], i["property"]) for i in self.dependency["inputs"]] + [
            ("state", s["id"], s["property"]) for s in self.dependency.get("state", [])
        ]

    def body(self, values: dict | None = None, changed: list[str] | None = None) -> dict:
        """A request as Dash's renderer sends it. `values` maps (id, property) to a value; for a
        pattern-matching input it maps to a list of (id dict, value)."""
        values = values or {}

        def item(declared: dict) -> Any:
            key = (declared["id"], declared["property"])
            if declared["id"].startswith("{"):
                return [{"id": i, "property": declared["property"], "value": v} for i, v in values.get(key, [])]
            return {"id": declared["id"], "property": declared["property"], "value": values.get(key)}

        outputs = split_outputs(self.output)
        if changed is None:
            changed = []
            for declared in self.dependency["inputs"]:
                key = (declared["id"], declared["property"])
                if declared["id"].startswith("{"):
                    changed += [f"{pattern_key(i)}.{declared['property']}" for i, v in values.get(key, []) if v]
                elif values.get(key) is not None:
                    changed.append(f"{declared['id']}.{declared['property']}")
        return {
            "output": self.output,
            "outputs": outputs if self.output.startswith("..") else outputs[0],
            "inputs": [item(i) for i in self.dependency["inputs"]],
            "state": [item(s) for s in self.dependency.get("state", [])],
            "changedPropIds": changed,
        }


def callbacks(app, client, **kwargs) -> list[Callback]:
    """Every server callback the app serves, from its own /_dash-dependencies (as `client`
    sees it), with the policy the app declared for it."""
    response = client.get("/_dash-dependencies", **kwargs)
    assert response.status_code == 200, response.status_code
    policies = app.server.extensions["switchyard.callback_policies"]
    found = []
    for dependency in response.get_json():
        if dependency.get("clientside_function"):
            continue
        policy = policies.get(dependency["output"])
        found.append(
            Callback(
                dependency,
                policy.name if policy else "",
                policy.action if policy else False,
                policy.permission if policy else None,
            )
        )
    return found


def clientside(client) -> list[dict]:
    return [d for d in client.get("/_dash-dependencies").get_json() if d.get("clientside_function")]


def post(client, body: Any, *, token: str | None = None, raw: bytes | str | None = None, base_url=None, **headers):
    """POST a callback request with the client's CSRF cookie as Dash's header (or `token`)."""
    sent = {"X-CSRFToken": csrf_cookie(client) if token is None else token, **headers}
    where = {"base_url": base_url} if base_url else {}
    if raw is not None:
        sent.setdefault("Content-Type", "application/json")
        return client.post(UPDATE, data=raw, headers=sent, **where)
    return client.post(UPDATE, json=body, headers=sent, **where)


def one_line_error(response) -> bool:
    """A refusal as the Dash endpoints give it: one line of JSON with an `error`."""
    text = response.get_data(as_text=True).strip()
    if "\n" in text:
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and set(data) == {"error"} and isinstance(data["error"], str)


def has_traceback(response) -> bool:
    return bool(TRACEBACK.search(response.get_data(as_text=True)))


# -- state -------------------------------------------------------------------------------------


@dataclass
class State:
    tables: dict[str, list[tuple]]
    audit_counts: dict[int, int]  # audit_log id -> count (refusals without a session are counted on one row)
    stream: dict = field(default_factory=dict)


def snapshot(runtime) -> State:
    """Every row of every table (audit_log apart), and the stream's counters and subjects. A
    session's last_seen_at is left out: bookkeeping written at most once a minute, by any request.
    Taken once what was dispatched is published (dispatch returns on commit)."""
    assert runtime.service.flush(10)
    tables: dict[str, list[tuple]] = {}
    with runtime.db.session() as session:
        for table in Base.metadata.sorted_tables:
            if table.name == "audit_log":
                continue
            columns = [c for c in table.columns if (table.name, c.name) != ("web_sessions", "last_seen_at")]
            rows = session.execute(select(*columns).order_by(*table.primary_key.columns)).all()
            tables[table.name] = [tuple(r) for r in rows]
        audit_counts = dict(session.execute(select(AuditLog.id, AuditLog.count)).all())
    broker = runtime.broker
    info = broker.run(broker.broker.jsm.stream_info(runtime.settings.stream_name, subjects_filter="tasks.>"))
    stream = {
        "messages": info.state.messages,
        "first_seq": info.state.first_seq,
        "last_seq": info.state.last_seq,
        "deleted": info.state.num_deleted,
        "subjects": dict(info.state.subjects or {}),
    }
    return State(tables, audit_counts, stream)


def new_audit_rows(runtime, before: State) -> list[AuditLog]:
    """Rows written since `before`, or counted once more since (a refusal without a session
    repeated within the minute)."""
    with runtime.db.session() as session:
        rows = session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
    return [r for r in rows if r.count > before.audit_counts.get(r.id, 0)]


def changed_tables(before: State, after: State) -> list[str]:
    names = [n for n in before.tables if before.tables[n] != after.tables.get(n)]
    if before.stream != after.stream:
        names.append("stream")
    return names
