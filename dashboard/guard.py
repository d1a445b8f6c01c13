"""Dash callbacks as HTTP endpoints: who may call each one, and what a call must look like.

Every server callback belongs to a page (or to the shell) and runs only for a signed-in user
who holds that page's permission, checked in core against the permissions loaded for this
request; a denial is audited and answered 403. Operations inside a callback are checked again
by core with the acting user. create_app refuses a server callback that was
registered outside `page_callbacks(...)`, and a request naming a callback without a policy is
refused, so nothing reaches Dash unguarded.

A request to /_dash-update-component must name a real server callback and carry exactly the
inputs, state and outputs that callback declares (ids, properties, pattern-matching shapes), or
it is answered 400 with one line of JSON before Dash sees it. Values are whatever JSON the
browser sent: callbacks and core check them.
"""

from __future__ import annotations

import functools
import json
from contextlib import contextmanager
from typing import Any

from flask import Flask, jsonify, request

from core.auth.permissions import Permission
from core.auth.policy import authorize
from core.errors import NotAllowed
from dashboard.auth import acting_user_or_none, client_address
from dashboard.security import UPDATE_COMPONENT, CallbackPolicy, callback_policies

# Inputs a person fires by clicking: a callback with one of them is an action.
ACTION_INPUTS = frozenset({"n_clicks", "n_submit", "cellRendererData"})
WILDCARDS = ("ALL", "MATCH", "ALLSMALLER")


class CallbackRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _gate(func, policy: CallbackPolicy, db):
    @functools.wraps(func)
    def gated(*args, **kwargs):
        user = acting_user_or_none()
        if user is None:
            raise CallbackRefused(401, "sign in first")
        if policy.permission is not None:
            try:
                authorize(db, user, policy.permission, action="callback", target=policy.name, address=client_address())
            except NotAllowed as error:
                raise CallbackRefused(403, str(error)) from None
        return func(*args, **kwargs)

    return gated


def _is_action(dependency: dict) -> bool:
    return any(item["property"] in ACTION_INPUTS for item in dependency.get("inputs", []))


@contextmanager
def page_callbacks(app, db, module_name: str, permission: Permission | None):
    """Callbacks registered inside this block run only for users holding `permission` (None:
    any signed-in user) and are named `<module>.<function>` in audit rows."""
    before = len(app._callback_list)
    yield
    policies = callback_policies(app.server)
    for dependency in app._callback_list[before:]:
        entry = app.callback_map.get(dependency["output"])
        if entry is None or "callback" not in entry:
            continue  # clientside: runs in the browser, never on the server
        func = entry["callback"]
        policy = CallbackPolicy(f"{module_name}.{func.__name__}", permission, _is_action(dependency))
        entry["callback"] = _gate(func, policy, db)
        policies[dependency["output"]] = policy


def seal(app) -> None:
    """Refuse to build an app with a server callback that has no policy."""
    policies = callback_policies(app.server)
    for output, entry in app.callback_map.items():
        if "callback" in entry and output not in policies:
            raise RuntimeError(
                f"callback for {output!r} was registered outside dashboard.guard.page_callbacks(): "
                "it would run for anyone signed in"
            )


# -- request checks --------------------------------------------------------------------------


def _declared_id(raw: str) -> str | dict:
    return json.loads(raw) if raw.startswith("{") else raw


def _id_matches(declared: str | dict, sent: Any) -> bool:
    if isinstance(declared, str):
        return sent == declared
    if not isinstance(sent, dict) or set(sent) != set(declared):
        return False
    for key, want in declared.items():
        value = sent[key]
        if isinstance(want, list) and want and want[0] in WILDCARDS:
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                return False
        elif value != want:
            return False
    return True


def _wildcard(declared: str | dict) -> str | None:
    if isinstance(declared, dict):
        for want in declared.values():
            if isinstance(want, list) and want and want[0] in WILDCARDS:
                return want[0]
    return None


def _item_ok(item: Any, declared: str | dict, prop: str) -> bool:
    # An output with allow_duplicate is named "prop@hash"; Dash takes it with or without the hash.
    props = (prop, prop.split("@", 1)[0])
    return (
        isinstance(item, dict) and item.get("property") in props and "id" in item and _id_matches(declared, item["id"])
    )


def _dependency_ok(sent: Any, raw_id: str, prop: str) -> bool:
    declared = _declared_id(raw_id)
    wildcard = _wildcard(declared)
    if wildcard in ("ALL", "ALLSMALLER"):
        return isinstance(sent, list) and all(_item_ok(item, declared, prop) for item in sent)
    return _item_ok(sent, declared, prop)


def _split_output(output: str) -> list[tuple[str, str]]:
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    return [tuple(part.rsplit(".", 1)) for part in parts]  # type: ignore[misc]


def request_problem(app, body: Any) -> str | None:
    """Why this body is not a call of one of the app's guarded server callbacks, or None."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    output = body.get("output")
    entry = app.callback_map.get(output) if isinstance(output, str) else None
    if entry is None or "callback" not in entry or output not in callback_policies(app.server):
        return "no such callback"
    dependency = next(d for d in app._callback_list if d["output"] == output)
    for key, declared in (("inputs", dependency["inputs"]), ("state", dependency.get("state", []))):
        sent = body.get(key, [])
        if not isinstance(sent, list) or len(sent) != len(declared):
            return f"{key} do not match the callback"
        for item, want in zip(sent, declared):
            if not _dependency_ok(item, want["id"], want["property"]):
                return f"{key} do not match the callback"
    outputs = _split_output(output)
    sent = body.get("outputs")
    if output.startswith(".."):
        if not isinstance(sent, list) or len(sent) != len(outputs):
            return "outputs do not match the callback"
    else:
        sent = [sent]
    for item, (raw_id, prop) in zip(sent, outputs):
        if not _dependency_ok(item, raw_id, prop):
            return "outputs do not match the callback"
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        return "changedPropIds must be a list of strings"
    if not set(changed) <= _input_names(body["inputs"]):
        return "changedPropIds name inputs the callback does not have"
    if not _encodable(body):
        return "the request holds text that is not valid Unicode"
    return None


def _input_names(inputs: list) -> set[str]:
    names = set()
    for item in inputs:
        for one in item if isinstance(item, list) else [item]:
            component = one["id"]
            key = (
                json.dumps(component, sort_keys=True, separators=(",", ":"))
                if isinstance(component, dict)
                else component
            )
            names.add(f"{key}.{one['property']}")
    return names


def _encodable(value: Any) -> bool:
    """False if some string holds a lone surrogate (JSON can carry one; no database stores it)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def install_request_checks(app) -> None:
    """Check every callback request before Dash dispatches it."""
    server: Flask = app.server
    endpoint = next(rule.endpoint for rule in server.url_map.iter_rules() if rule.rule == UPDATE_COMPONENT)
    dispatch = server.view_functions[endpoint]

    @functools.wraps(dispatch)
    def checked_dispatch(*args, **kwargs):
        try:
            body = request.get_json(silent=True)
        except RecursionError:
            body = None
        problem = request_problem(app, body)
        if problem is not None:
            return jsonify(error=problem), 400
        return dispatch(*args, **kwargs)

    server.view_functions[endpoint] = checked_dispatch

    @server.errorhandler(CallbackRefused)
    def callback_refused(error: CallbackRefused):
        # The denial itself was audited by core; a missing session is refused in auth.py first.
        return {"error": error.message}, error.status
