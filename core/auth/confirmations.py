"""Pending confirmations: an action the console asked a person to confirm (an upgrade, with its
reason; a cancel, with an optional one; a retry).

The dialog holds the pending action in the browser as a token signed with the app's secret
key, naming the user it was issued to. Only the dialog sends a token, and only the one it was
given: no token, a tampered one or another user's is a forged or replayed request, denied and
audited here before anything else is asked. An expired one (the dialog left open for over
PENDING_MAX_AGE) is refused.
"""

from __future__ import annotations

from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core.auth.audit import DENIED, REFUSED, record
from core.errors import NotAllowed, WrongState
from core.priority import UpgradeAction
from db.engine import Database

PENDING_MAX_AGE = 600  # seconds a dialog stays valid
_ACTIONS = tuple(a.value for a in UpgradeAction) + ("cancel", "retry")


def signer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt="switchyard.task-action")


def sign_pending(serializer: URLSafeTimedSerializer, user: Any, task_id: str, action: str) -> str:
    """A token for `user` (anyone with a username) to confirm `action` on `task_id`."""
    return str(serializer.dumps({"user": user.username, "task": task_id, "action": action}))


def redeem_pending(
    db: Database, serializer: URLSafeTimedSerializer, user: Any, token: Any, *, address: str | None = None
) -> tuple[str, str]:
    """(task_id, action) if the token is ours, recent and was issued to this user. Otherwise the
    refusal is audited and raised: NotAllowed (forged, altered, another user's) or WrongState
    (expired)."""

    def refuse(outcome: str, detail: str, action: Any = None, target: Any = None) -> None:
        audited_action = action if action in _ACTIONS else "upgrade"
        record(db, actor=user.username, action=audited_action, target=target, outcome=outcome, detail=detail,
               address=address)  # fmt: skip
        raise (NotAllowed if outcome == DENIED else WrongState)(detail)

    if not isinstance(token, str) or not token:
        refuse(DENIED, "confirmation without a pending dialog")
    try:
        data = serializer.loads(token, max_age=PENDING_MAX_AGE)
    except SignatureExpired:
        refuse(REFUSED, f"confirmation older than {PENDING_MAX_AGE} s")
    except BadSignature:
        refuse(DENIED, "confirmation token forged or altered")
    if not isinstance(data, dict):
        refuse(DENIED, "confirmation token malformed")
    task_id, action, owner = data.get("task"), data.get("action"), data.get("user")
    target = task_id if isinstance(task_id, str) else None
    if owner != user.username:
        refuse(DENIED, f"confirmation issued to {str(owner)[:64]!r} replayed by {user.username!r}", action, target)
    if target is None or action not in _ACTIONS:
        refuse(DENIED, "confirmation token malformed", action, target)
    return str(target), str(action)
