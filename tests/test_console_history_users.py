"""The console's user admin (core.user_admin, /users) and history analytics (core.history, /history).

Real database (SQLite, and PostgreSQL when configured), real broker for the app tests."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, update

from core.auth import user_admin
from core.auth.sessions import session_user
from core.auth.signin import authenticate
from core.errors import InvalidInput, NotAllowed, NotFound, WrongState
from core.observe import history
from db.engine import Database
from db.models import AuditLog, PriorityHistory, Task, User
from tests.support.constants import PASSWORD, ROLE_USERS
from tests.support.harness import Recorder

pytestmark = pytest.mark.timeout(180)

NEW_PASSWORD = "another long password"


@pytest.fixture
def db(settings):
    database = Database(settings.resolved_database_url)
    yield database
    database.dispose()


def users_snapshot(db):
    with db.session() as s:
        return [
            (u.username, u.role, u.active, u.session_version, u.password_hash)
            for u in s.scalars(select(User).order_by(User.username))
        ]


def audit_rows(db, **where):
    with db.session() as s:
        query = select(AuditLog).order_by(AuditLog.id)
        for key, value in where.items():
            query = query.where(getattr(AuditLog, key) == value)
        return list(s.scalars(query))


def version(db, username):
    with db.session() as s:
        return s.scalar(select(User.session_version).where(User.username == username))


# -- core.user_admin -------------------------------------------------------------------------------


OPERATIONS = {
    "user.list": lambda db, actor: user_admin.list_users(db, actor),
    "user.create": lambda db, actor: user_admin.create_user(
        db, actor, "newbie", PASSWORD, "viewer", address="10.0.0.9"
    ),
    "user.role": lambda db, actor: user_admin.change_role(db, actor, "vera", "admin", address="10.0.0.9"),
    "user.disable": lambda db, actor: user_admin.set_active(db, actor, "ada", False, address="10.0.0.9"),
    "user.password": lambda db, actor: user_admin.reset_password(db, actor, "ada", NEW_PASSWORD, address="10.0.0.9"),
}


@pytest.mark.parametrize("role", ["viewer", "operator", "manager"])
def test_con_u001_only_admins_manage_users_denials_change_nothing(db, role):
    actor = ROLE_USERS[role]
    before = users_snapshot(db)
    for action, operation in OPERATIONS.items():
        with pytest.raises(NotAllowed) as raised:
            operation(db, actor)
        assert "\n" not in str(raised.value)
        assert "may not manage users" in str(raised.value)
        denied = audit_rows(db, actor=actor, action=action)
        assert [r.outcome for r in denied] == ["denied"], action
    assert users_snapshot(db) == before
    assert len(audit_rows(db, outcome="denied")) == len(OPERATIONS)


def test_con_u002_unknown_or_disabled_actor_is_denied(db):
    before = users_snapshot(db)
    for actor in ("nobody", None, "", "x" * 500, {"username": "ada"}):
        with pytest.raises(NotAllowed):
            user_admin.change_role(db, actor, "vera", "admin")
    user_admin.create_user(db, "ada", "ada2", PASSWORD, "admin")
    user_admin.set_active(db, "ada2", "ada", False)
    with pytest.raises(NotAllowed):
        user_admin.change_role(db, "ada", "vera", "admin")
    after = {u[0]: u for u in users_snapshot(db)}
    assert after["vera"][1] == "viewer"
    assert [u for u in before if u[0] != "ada"] == [after[u[0]] for u in before if u[0] != "ada"]


def test_con_u003_admin_lists_and_creates_users_without_hashes(db):
    users = user_admin.list_users(db, "ada")
    assert [u.username for u in users] == ["ada", "mona", "otto", "vera"]
    assert all(not hasattr(u, "password_hash") for u in users)
    assert "password_hash" not in users[0].as_dict()

    info = user_admin.create_user(db, "ada", "new.user@ops", PASSWORD, "Operator", address="10.1.1.1")
    assert (info.username, info.role, info.active, info.session_version) == ("new.user@ops", "operator", True, 1)
    assert not hasattr(info, "password_hash")
    assert authenticate(db, "new.user@ops", PASSWORD).role.value == "operator"
    row = audit_rows(db, action="user.create", target="new.user@ops")[-1]
    assert (row.actor, row.outcome, row.detail, row.address) == ("ada", "ok", "role=operator", "10.1.1.1")


@pytest.mark.parametrize(
    "username, password, role, error, text",
    [
        ("bad name", PASSWORD, "viewer", InvalidInput, "user names are"),
        ("", PASSWORD, "viewer", InvalidInput, "user names are"),
        ("-dash", PASSWORD, "viewer", InvalidInput, "user names are"),
        ("ok", "short", "viewer", InvalidInput, "at least 8"),
        ("ok", None, "viewer", InvalidInput, "at least 8"),
        ("ok", PASSWORD, "superuser", InvalidInput, "unknown role"),
        ("mona", PASSWORD, "viewer", InvalidInput, "already exists"),
    ],
)
def test_con_u004_create_refusals_are_one_line_and_audited(db, username, password, role, error, text):
    before = users_snapshot(db)
    with pytest.raises(error) as raised:
        user_admin.create_user(db, "ada", username, password, role)
    assert text in str(raised.value) and "\n" not in str(raised.value)
    assert users_snapshot(db) == before
    refused = audit_rows(db, action="user.create", outcome="refused")
    assert len(refused) == 1 and refused[0].actor == "ada" and text in refused[0].detail


def test_con_u005_change_role_bumps_session_version_and_is_audited(db):
    signed_in = authenticate(db, "vera", PASSWORD)
    assert session_user(db, signed_in.token) is not None
    info = user_admin.change_role(db, "ada", "vera", "manager", address="10.2.2.2")
    assert (info.role, info.session_version) == ("manager", 2)
    assert session_user(db, signed_in.token) is None  # the old session ended
    row = audit_rows(db, action="user.role")[-1]
    assert (row.actor, row.target, row.outcome, row.detail, row.address) == (
        "ada",
        "vera",
        "ok",
        "viewer -> manager",
        "10.2.2.2",
    )

    with pytest.raises(WrongState, match="already manager"):
        user_admin.change_role(db, "ada", "vera", "manager")
    with pytest.raises(InvalidInput, match="unknown role"):
        user_admin.change_role(db, "ada", "vera", "root")
    with pytest.raises(NotFound, match="no user named 'ghost'"):
        user_admin.change_role(db, "ada", "ghost", "viewer")
    with pytest.raises(InvalidInput, match="choose a user"):
        user_admin.change_role(db, "ada", None, "viewer")
    assert version(db, "vera") == 2
    assert [r.outcome for r in audit_rows(db, action="user.role")] == ["ok", "refused", "refused", "refused", "refused"]


def test_con_u006_disable_enable_and_guard_rails(db):
    signed_in = authenticate(db, "otto", PASSWORD)
    info = user_admin.set_active(db, "ada", "otto", False)
    assert (info.active, info.session_version) == (False, 2)
    assert session_user(db, signed_in.token) is None
    with pytest.raises(NotAllowed):
        authenticate(db, "otto", PASSWORD)
    with pytest.raises(WrongState, match="already disabled"):
        user_admin.set_active(db, "ada", "otto", False)
    info = user_admin.set_active(db, "ada", "otto", True)
    assert (info.active, info.session_version) == (True, 2)
    assert session_user(db, authenticate(db, "otto", PASSWORD).token).username == "otto"
    assert [(r.action, r.outcome) for r in audit_rows(db, target="otto") if r.action.startswith("user.")] == [
        ("user.create", "ok"),
        ("user.disable", "ok"),
        ("user.disable", "refused"),
        ("user.enable", "ok"),
    ]

    # An admin cannot disable themself, nor demote the last active admin.
    with pytest.raises(WrongState, match="cannot disable yourself"):
        user_admin.set_active(db, "ada", "ada", False)
    with pytest.raises(WrongState, match="last active admin"):
        user_admin.change_role(db, "ada", "ada", "manager")
    assert version(db, "ada") == 1

    # With a second admin: that admin can demote ada, but then cannot disable/demote themself.
    user_admin.create_user(db, "ada", "root2", PASSWORD, "admin")
    user_admin.change_role(db, "root2", "ada", "manager")
    with pytest.raises(WrongState, match="last active admin"):
        user_admin.change_role(db, "root2", "root2", "viewer")
    with pytest.raises(WrongState, match="cannot disable yourself"):
        user_admin.set_active(db, "root2", "root2", False)
    # A disabled admin does not count as an admin.
    user_admin.create_user(db, "root2", "root3", PASSWORD, "admin")
    user_admin.set_active(db, "root2", "root3", False)
    with pytest.raises(WrongState, match="last active admin"):
        user_admin.change_role(db, "root2", "root2", "viewer")
    with pytest.raises(InvalidInput, match="true or false"):
        user_admin.set_active(db, "root2", "root3", "yes")


def test_con_u007_reset_password(db):
    signed_in = authenticate(db, "mona", PASSWORD)
    with pytest.raises(InvalidInput, match="at least 8"):
        user_admin.reset_password(db, "ada", "mona", "short")
    assert version(db, "mona") == 1
    info = user_admin.reset_password(db, "ada", "mona", NEW_PASSWORD, address="10.3.3.3")
    assert info.session_version == 2
    assert session_user(db, signed_in.token) is None
    with pytest.raises(NotAllowed):
        authenticate(db, "mona", PASSWORD)
    assert authenticate(db, "mona", NEW_PASSWORD).username == "mona"
    rows = [r for r in audit_rows(db, action="user.password")]
    assert [(r.outcome, r.target) for r in rows] == [("refused", "mona"), ("ok", "mona")]
    assert all(NEW_PASSWORD not in (r.detail or "") and "argon2" not in (r.detail or "") for r in rows)
    with pytest.raises(NotFound):
        user_admin.reset_password(db, "ada", "ghost", NEW_PASSWORD)


# -- core.history -------------------------------------------------------------------------------

T0 = datetime(2025, 3, 10, tzinfo=timezone.utc)
FORMULA = "=cmd|' /C calc'!A0"


def at(hours=0, minutes=0, seconds=0):
    return T0 + timedelta(hours=hours, minutes=minutes, seconds=seconds)


def task_row(task_id, category, phase, queued_at, started_at=None):
    return dict(
        id=task_id,
        name=f"{category}.job",
        category=category,
        phase=phase,
        priority=8,
        bucket="high",
        status="succeeded" if started_at else "queued",
        args={},
        generation=1,
        attempts=0,
        max_attempts=3,
        created_at=queued_at,
        queued_at=queued_at,
        started_at=started_at,
    )


TASKS = {
    "t1": ("etl", "extract", at(0), at(1, 30)),
    "t2": ("etl", "load", at(0), None),
    "t3": ("report", "default", at(1), at(2, 10)),
    "t4": ("webapp", "transform", at(26), at(26, 0, 35)),
}


def history_row(task_id, changed_at, action, user, reason, to_priority):
    """As upgrade_task writes it (category, phase, queued_at copied from the task) and the
    trigger completes it (started_at). 'gone' stands for a row written by hand: none of them."""
    category, phase, queued_at, started_at = TASKS.get(task_id, (None, None, None, None))
    return dict(
        task_id=task_id,
        changed_at=changed_at,
        from_priority=5,
        to_priority=to_priority,
        from_bucket="normal",
        to_bucket="high",
        action=action,
        reason=reason,
        changed_by=user,
        category=category,
        phase=phase,
        queued_at=queued_at,
        started_at=started_at,
        wait_before_s=(changed_at - queued_at).total_seconds() if queued_at else None,
        wait_after_s=(started_at - changed_at).total_seconds() if started_at else None,
    )


@pytest.fixture
def seeded(db):
    with db.session(write=True) as s:
        s.execute(
            insert(Task),
            [task_row(task_id, *values) for task_id, values in TASKS.items()],
        )
        s.execute(
            insert(PriorityHistory),
            [
                history_row("t1", at(0, 10), "prioritize", "otto", "customer waiting", 8),
                history_row("t1", at(0, 40), "urgent", "mona", "escalated 100% now", 9),
                history_row("t2", at(0, 50), "prioritize", "otto", "batch late", 8),
                history_row("t3", at(1, 6), "critical", "ada", FORMULA, 10),
                history_row("t4", at(26, 0, 5), "urgent", "mona", "Customer escalation", 9),
                history_row("gone", at(26, 30), "prioritize", "otto", "old task", 8),
            ],
        )
    return db


def test_con_h001_changes_over_time_per_hour_and_per_day(seeded):
    everything = history.HistoryFilter()
    assert history.granularity(seeded, everything) == "hour"
    hourly = history.changes_over_time(seeded, everything)
    assert hourly["unit"] == "hour"
    assert [(p["at"], p["action"], p["count"]) for p in hourly["points"]] == [
        (at(0), "prioritize", 2),
        (at(0), "urgent", 1),
        (at(1), "critical", 1),
        (at(26), "prioritize", 1),
        (at(26), "urgent", 1),
    ]
    assert all(p["at"].tzinfo is not None for p in hourly["points"])

    month = history.make_filter("2025-03-01", "2025-03-31")
    assert history.granularity(seeded, month) == "day"
    daily = history.changes_over_time(seeded, month)
    assert [(p["at"], p["action"], p["count"]) for p in daily["points"]] == [
        (at(0), "critical", 1),
        (at(0), "prioritize", 2),
        (at(0), "urgent", 1),
        (at(24), "prioritize", 1),
        (at(24), "urgent", 1),
    ]
    assert history.changes_over_time(seeded, history.make_filter("2024-01-01", "2024-01-02"))["points"] == []


def test_con_h002_by_user_and_by_category_phase(seeded):
    everything = history.HistoryFilter()
    assert history.changes_by_user(seeded, everything) == [
        {"user": "otto", "action": "prioritize", "count": 3},
        {"user": "mona", "action": "urgent", "count": 2},
        {"user": "ada", "action": "critical", "count": 1},
    ]
    assert history.changes_by_category_phase(seeded, everything) == [
        {"category": "(unknown)", "phase": "(unknown)", "count": 1},
        {"category": "etl", "phase": "extract", "count": 2},
        {"category": "etl", "phase": "load", "count": 1},
        {"category": "report", "phase": "default", "count": 1},
        {"category": "webapp", "phase": "transform", "count": 1},
    ]
    etl = history.make_filter(category="etl")
    assert history.changes_by_user(seeded, etl) == [
        {"user": "otto", "action": "prioritize", "count": 2},
        {"user": "mona", "action": "urgent", "count": 1},
    ]
    assert history.filter_options(seeded) == {
        "users": ["ada", "mona", "otto"],
        "categories": ["etl", "report", "webapp"],
    }


def test_con_h003_queue_wait_before_and_after(seeded):
    wait = history.queue_wait(seeded, history.HistoryFilter())
    summary = {row["action"]: row for row in wait["summary"]}
    approx = lambda v: pytest.approx(v, abs=0.01)  # noqa: E731
    assert summary["prioritize"] == {
        "action": "prioritize",
        "upgrades": 3,
        "before_n": 2,
        "before_avg_s": approx(1800),
        "before_max_s": approx(3000),
        "after_n": 1,
        "after_avg_s": approx(4800),
        "after_max_s": approx(4800),
    }
    assert summary["urgent"] == {
        "action": "urgent",
        "upgrades": 2,
        "before_n": 2,
        "before_avg_s": approx(1202.5),
        "before_max_s": approx(2400),
        "after_n": 2,
        "after_avg_s": approx(1515),
        "after_max_s": approx(3000),
    }
    assert summary["critical"] == {
        "action": "critical",
        "upgrades": 1,
        "before_n": 1,
        "before_avg_s": approx(360),
        "before_max_s": approx(360),
        "after_n": 1,
        "after_avg_s": approx(3840),
        "after_max_s": approx(3840),
    }
    assert [(b["bin"], b["before"], b["after"]) for b in wait["bins"]] == [
        ("< 10 s", 1, 0),
        ("10-60 s", 0, 1),
        ("1-5 min", 0, 0),
        ("5-15 min", 2, 0),
        ("15-60 min", 2, 1),
        ("1-4 h", 0, 2),
        ("> 4 h", 0, 0),
    ]
    urgent = history.queue_wait(seeded, history.make_filter(action="urgent"))
    assert [r["action"] for r in urgent["summary"]] == ["urgent"]
    assert sum(b["before"] for b in urgent["bins"]) == 2


def test_con_h004_table_filters_and_paging(seeded):
    def ids(f, **kw):
        result = history.history_rows(seeded, f, **kw)
        return result["total"], [(r["task_id"], r["action"]) for r in result["rows"]]

    everything = history.HistoryFilter()
    total, rows = ids(everything)
    assert total == 6
    assert rows == [
        ("gone", "prioritize"),
        ("t4", "urgent"),
        ("t3", "critical"),
        ("t2", "prioritize"),
        ("t1", "urgent"),
        ("t1", "prioritize"),
    ]
    assert ids(everything, limit=2, offset=1) == (6, [("t4", "urgent"), ("t3", "critical")])
    assert ids(history.make_filter(action="urgent"))[0] == 2
    assert ids(history.make_filter(user="otto"))[0] == 3
    assert ids(history.make_filter(category="etl"))[0] == 3
    assert ids(history.make_filter(text="ESCALAT"))[1] == [("t4", "urgent"), ("t1", "urgent")]
    assert ids(history.make_filter(text="100%"))[0] == 1
    assert ids(history.make_filter(text="%"))[0] == 1  # a literal percent sign, not a wildcard
    assert ids(history.make_filter(text="_"))[0] == 0
    assert ids(history.make_filter("2025-03-11", "2025-03-11"))[1] == [("gone", "prioritize"), ("t4", "urgent")]
    assert ids(history.make_filter("2025-03-10", "2025-03-10", user="otto", category="etl"))[0] == 2
    first = history.history_rows(seeded, everything, limit=1)["rows"][0]
    assert first["changed_at"] == "2025-03-11T02:30:00+00:00" and first["category"] is None


def test_con_h005_filter_validation(seeded):
    for kwargs, text in [
        (dict(start_date="2025-03-12", end_date="2025-03-10"), "before the start"),
        (dict(start_date="yesterday"), "must be a date"),
        (dict(action="delete"), "the action is one of prioritize, urgent, critical, cancel, retry"),
        (dict(user="x" * 65), "at most 64"),
        (dict(text=["list"]), "must be text"),
    ]:
        with pytest.raises(InvalidInput, match=text):
            history.make_filter(**kwargs)
    with pytest.raises(InvalidInput, match="time zone"):
        history.history_rows(seeded, history.HistoryFilter(start=datetime(2025, 3, 10)))
    with pytest.raises(InvalidInput):
        history.history_rows(seeded, history.HistoryFilter(), limit=0)


def test_con_h006_cancels_and_retries_come_from_the_audit_log(seeded):
    """The page counts what people did besides upgrading: successful cancels and retries from the
    audit log, with their task's category and phase; refusals and other audit rows are not changes."""
    with seeded.session(write=True) as s:
        s.execute(
            insert(AuditLog),
            [
                dict(at=at(2), actor="mona", action="cancel", target="t2", outcome="ok", detail="duplicate load"),
                dict(at=at(27), actor="otto", action="retry", target="t3", outcome="ok", detail=None),
                dict(at=at(3), actor="otto", action="cancel", target="t1", outcome="denied", detail="not allowed"),
                dict(at=at(3), actor="otto", action="sign_in", target=None, outcome="ok", detail=None),
            ],
        )
    everything = history.HistoryFilter()
    result = history.history_rows(seeded, everything)
    rows = [(r["task_id"], r["action"], r["changed_by"]) for r in result["rows"]]
    assert result["total"] == 8
    assert rows[:2] == [("t3", "retry", "otto"), ("gone", "prioritize", "otto")]
    assert rows[3] == ("t2", "cancel", "mona")
    cancel = result["rows"][3]
    assert (cancel["reason"], cancel["category"], cancel["phase"], cancel["from_priority"]) == (
        "duplicate load", "etl", "load", None,
    )  # fmt: skip
    paged = history.history_rows(seeded, everything, limit=3, offset=2)["rows"]
    assert [(r["task_id"], r["action"]) for r in paged] == [("t4", "urgent"), ("t2", "cancel"), ("t3", "critical")]

    assert history.history_rows(seeded, history.make_filter(action="cancel"))["total"] == 1
    assert history.history_rows(seeded, history.make_filter(text="duplicate"))["total"] == 1
    assert history.history_rows(seeded, history.make_filter(category="report"))["total"] == 2
    assert history.history_rows(seeded, history.make_filter(action="retry", user="mona"))["total"] == 0
    by_user = history.changes_by_user(seeded, everything)
    assert {"user": "otto", "action": "retry", "count": 1} in by_user
    assert {"user": "mona", "action": "cancel", "count": 1} in by_user
    assert by_user[0]["user"] == "otto"  # 4 changes
    cells = {(c["category"], c["phase"]): c["count"] for c in history.changes_by_category_phase(seeded, everything)}
    assert cells[("etl", "load")] == 2 and cells[("report", "default")] == 2
    hourly = history.changes_over_time(seeded, everything)
    assert (at(2), "cancel", 1) in [(p["at"], p["action"], p["count"]) for p in hourly["points"]]
    assert history.time_range(seeded, everything) == (at(0, 10), at(27))
    assert history.queue_wait(seeded, history.make_filter(action="retry"))["summary"] == []
    exported = list(csv.DictReader(io.StringIO(history.export_csv(seeded, everything))))
    assert len(exported) == 8 and exported[0]["action"] == "retry" and exported[0]["to_priority"] == ""
    assert history.filter_options(seeded)["users"] == ["ada", "mona", "otto"]


def test_con_h007_history_rows_carry_the_task_facts_and_learn_when_it_started(runtime, start_worker):
    from core.tasks.rows import DispatchRequest

    task_id = runtime.service.dispatch_tasks([DispatchRequest("etl.load", {}, priority=2)], created_by="t")[0]
    runtime.service.upgrade_task(task_id, "prioritize", "late", "otto")
    recorder = Recorder()
    start_worker(recorder, categories=("etl",))
    recorder.wait_for(lambda: task_id in recorder.of("succeeded"))
    with runtime.db.session() as s:
        task = s.get(Task, task_id)
        row = s.scalars(select(PriorityHistory).where(PriorityHistory.task_id == task_id)).one()
    assert (row.category, row.phase, row.queued_at) == ("etl", "load", task.queued_at)
    assert row.started_at == task.started_at and row.started_at >= row.changed_at  # set by the trigger
    assert row.wait_before_s == pytest.approx((row.changed_at - row.queued_at).total_seconds(), abs=1e-3)
    assert row.wait_after_s == pytest.approx((row.started_at - row.changed_at).total_seconds(), abs=1e-3)

    # Started, failed, retried and upgraded again (the worker above takes only etl tasks; these
    # starts are written by hand): the new row gets the new start, the old one keeps its own.
    other = runtime.service.dispatch_task("demo.echo", priority=3)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    first, second = now + timedelta(minutes=1), now + timedelta(minutes=2)

    def start(when):
        with runtime.db.session(write=True) as s:
            s.execute(update(Task).where(Task.id == other).values(status="running", started_at=when))

    runtime.service.upgrade_task(other, "prioritize", "late", "otto")
    start(first)
    with runtime.db.session(write=True) as s:
        s.execute(update(Task).where(Task.id == other).values(status="failed"))
    runtime.service.retry_task(other, "otto")
    runtime.service.upgrade_task(other, "urgent", "again", "mona")
    start(second)
    with runtime.db.session() as s:
        starts = s.execute(
            select(
                PriorityHistory.action,
                PriorityHistory.started_at,
                PriorityHistory.wait_after_s,
                PriorityHistory.changed_at,
            )
            .where(PriorityHistory.task_id == other)
            .order_by(PriorityHistory.id)
        ).all()
    assert [tuple(r[:2]) for r in starts] == [("prioritize", first), ("urgent", second)]
    assert [round(r[2] - (r[1] - r[3]).total_seconds(), 3) for r in starts] == [0, 0]  # wait_after_s


def test_con_h006_csv_export(seeded):
    text = history.export_csv(seeded, history.make_filter("2025-03-10", "2025-03-10"))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(history.CSV_COLUMNS)
    assert len(rows) == 5
    by_task = [(r[2], r[6], r[11]) for r in rows[1:]]
    assert by_task == [
        ("t3", "critical", "ada"),
        ("t2", "prioritize", "otto"),
        ("t1", "urgent", "mona"),
        ("t1", "prioritize", "otto"),
    ]
    critical = dict(zip(rows[0], rows[1]))
    assert critical["reason"] == "'" + FORMULA  # a spreadsheet will not run it
    assert critical["changed_at"] == "2025-03-10T01:06:00+00:00"
    assert critical["queued_at"] == "2025-03-10T01:00:00+00:00"
    assert (critical["category"], critical["phase"], critical["from_priority"], critical["to_priority"]) == (
        "report",
        "default",
        "5",
        "10",
    )
    assert history.export_csv(seeded, history.make_filter(user="nobody")) == ",".join(history.CSV_COLUMNS) + "\n"
    assert len(list(csv.reader(io.StringIO(history.export_csv(seeded, history.HistoryFilter(), limit=2))))) == 3


@pytest.fixture
def app(settings, runtime):
    from dashboard.app import create_app

    return create_app(settings, runtime)


def sign_in(app, username, password=PASSWORD):
    client = app.server.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def call_callback(client, output_contains, values, triggered):
    """POST to /_dash-update-component as the browser would, for the callback writing `output_contains`."""
    dependencies = client.get("/_dash-dependencies").get_json()
    dep = next(d for d in dependencies if output_contains in d["output"])
    outputs = []
    for part in dep["output"].strip(".").split("..."):
        component, prop = part.rsplit(".", 1)
        outputs.append({"id": component, "property": prop.split("@")[0]})

    def fill(items):
        return [{"id": i["id"], "property": i["property"], "value": values.get(i["id"])} for i in items]

    payload = {
        "output": dep["output"],
        "outputs": outputs if len(outputs) > 1 else outputs[0],
        "inputs": fill(dep["inputs"]),
        "state": fill(dep["state"]),
        "changedPropIds": [triggered],
    }
    csrf = client.get_cookie("_csrf_token").value
    return client.post("/_dash-update-component", json=payload, headers={"X-CSRFToken": csrf})


def test_con_p001_manager_posting_to_user_admin_callback_is_refused(app, runtime):
    db = runtime.db
    before = users_snapshot(db)
    client = sign_in(app, "mona")
    assert "Not allowed" in str(call_callback(client, "page.children", {"url": "/users"}, "url.pathname").get_json())
    for button, values in [
        ("create-user", {"new-username": "intruder", "new-password": PASSWORD, "new-role": "admin"}),
        ("change-role", {"target-user": "mona", "target-role": "admin"}),
        ("toggle-active", {"target-user": "ada", "users-data": [{"username": "ada", "active": True}]}),
        ("reset-password", {"target-user": "ada", "reset-password-input": NEW_PASSWORD}),
    ]:
        # The Users page's callbacks answer only roles holding its permission (dashboard.callbacks);
        # core.user_admin checks it again (test_con_u0xx).
        response = call_callback(client, "users-result.children", {button: 1, **values}, f"{button}.n_clicks")
        assert response.status_code == 403, response.get_data(as_text=True)
        assert response.get_json() == {"error": "not allowed: manager 'mona' may not manage users"}
    assert users_snapshot(db) == before
    denied = audit_rows(db, actor="mona", outcome="denied")
    assert [(r.action, r.target) for r in denied] == [("view", "/users")] + [("callback", "users.act")] * 4
    assert all(r.address == "127.0.0.1" for r in denied)

    # A re-render (no click) does nothing at all.
    admin = sign_in(app, "ada")
    response = call_callback(admin, "users-result.children", {"create-user": None}, "create-user.n_clicks")
    assert response.status_code == 204


def test_con_p002_admin_uses_the_users_page_callbacks(app, runtime):
    db = runtime.db
    client = sign_in(app, "ada")
    layout = call_callback(client, "page.children", {"url": "/users"}, "url.pathname").get_data(as_text=True)
    assert "users-table" in layout and "mona" in layout and "password_hash" not in layout
    response = call_callback(
        client,
        "users-result.children",
        {"create-user": 1, "new-username": "<b>eve</b>", "new-password": PASSWORD, "new-role": "viewer"},
        "create-user.n_clicks",
    )
    assert "user names are" in response.get_data(as_text=True)
    response = call_callback(
        client,
        "users-result.children",
        {"create-user": 2, "new-username": "eve", "new-password": PASSWORD, "new-role": "viewer"},
        "create-user.n_clicks",
    )
    assert "Created eve (viewer)." in response.get_data(as_text=True)
    response = call_callback(
        client,
        "users-result.children",
        {"change-role": 1, "target-user": "eve", "target-role": "operator"},
        "change-role.n_clicks",
    )
    assert "eve is now operator" in response.get_data(as_text=True)
    assert version(db, "eve") == 2
    # The admin's own session survives; vera's ends when disabled.
    vera = sign_in(app, "vera")
    response = call_callback(
        client,
        "users-result.children",
        {"toggle-active": 1, "target-user": "vera", "users-data": [{"username": "vera", "active": True}]},
        "toggle-active.n_clicks",
    )
    assert response.status_code == 204  # Disable asks first: the click only opens the dialog
    assert vera.get("/_dash-layout").status_code == 200
    response = call_callback(
        client,
        "users-result.children",
        {"disable-confirm": 1, "target-user": "vera", "users-data": [{"username": "vera", "active": True}]},
        "disable-confirm.n_clicks",
    )
    assert "vera is disabled" in response.get_data(as_text=True)
    assert vera.get("/_dash-layout").status_code == 401


def test_con_p003_history_callbacks_check_view_history(app, runtime, seeded):
    values = {"history-from": None, "history-to": None}
    viewer = sign_in(app, "vera")
    response = call_callback(viewer, "history-over-time.figure", values, "history-from.value")
    assert response.status_code == 403
    response = call_callback(viewer, "history-download-data.data", {"history-download": 1}, "history-download.n_clicks")
    assert response.status_code == 403

    manager = sign_in(app, "mona")
    response = call_callback(manager, "history-over-time.figure", values, "history-from.value")
    assert response.status_code == 200
    body = response.get_json()["response"]
    assert body["history-summary"]["children"].startswith("6 changes match")
    assert len(body["history-table"]["rowData"]) == 6
    response = call_callback(
        manager,
        "history-download-data.data",
        {"history-download": 1, "history-action": "urgent"},
        "history-download.n_clicks",
    )
    data = response.get_json()["response"]["history-download-data"]["data"]
    assert data["filename"].endswith(".csv")
    assert len(list(csv.reader(io.StringIO(data["content"])))) == 3
