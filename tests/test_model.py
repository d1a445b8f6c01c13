"""The priority model and the permission table, checked against the priority and roles tables written out."""

import pytest

from core.auth.permissions import ROLE_PERMISSIONS, Permission, Role
from core.errors import InvalidInput
from core.priority import Bucket, Priority, UpgradeAction, parse_priority, priority_to_bucket, subject_for

EXPECTED_BUCKETS = {
    0: "low",
    1: "low",
    2: "low",
    3: "low",
    4: "normal",
    5: "normal",
    6: "normal",
    7: "normal",
    8: "high",
    9: "high",
    10: "high",
}
EXPECTED_NAMES = {
    10: "Critical",
    9: "Urgent",
    8: "Prioritize",
    7: "High",
    6: "Above normal",
    5: "Normal",
    4: "Below normal",
    3: "Low",
    2: "Background",
    1: "Maintenance",
    0: "Lowest",
}

# The roles table, typed out: the source of truth these tests hold the code to. Plus
# dispatch_tasks (the HTTP API's dispatch; decided in docs/architecture.md): not for viewers.
EXPECTED_PERMISSIONS = {
    "viewer": {"view_dashboard", "view_tasks"},
    "operator": {"view_dashboard", "view_tasks", "prioritize_tasks", "dispatch_tasks"},
    "manager": {
        "view_dashboard",
        "view_tasks",
        "prioritize_tasks",
        "dispatch_tasks",
        "urgent_tasks",
        "cancel_tasks",
        "view_history",
    },
    "admin": {
        "view_dashboard",
        "view_tasks",
        "prioritize_tasks",
        "dispatch_tasks",
        "urgent_tasks",
        "cancel_tasks",
        "critical_tasks",
        "manage_users",
        "view_history",
    },
    # A producer's token: dispatch at any priority, nothing else.
    "service": {"dispatch_tasks", "dispatch_any_priority"},
}


def test_mod001_every_level_maps_to_its_bucket_and_name():
    for level in range(11):
        assert priority_to_bucket(level).value == EXPECTED_BUCKETS[level]
        assert Priority(level).label == EXPECTED_NAMES[level]


def test_mod002_upgrade_actions_are_8_9_10():
    assert [UpgradeAction(a).target for a in ("prioritize", "urgent", "critical")] == [8, 9, 10]


def test_mod003_subjects():
    assert subject_for("etl", "load", Bucket.HIGH) == "tasks.etl.load.high"
    assert subject_for("alert", "default", "low") == "tasks.alert.default.low"


@pytest.mark.parametrize("bad", [-1, 11, "ten", None, 3.5, True, "", "99"])
def test_mod004_bad_priorities_are_refused(bad):
    with pytest.raises(InvalidInput, match="priority must be a whole number from 0 to 10"):
        parse_priority(bad)


def test_mod005_role_table_matches_design():
    assert {role.value: {p.value for p in perms} for role, perms in ROLE_PERMISSIONS.items()} == EXPECTED_PERMISSIONS
    assert {r.value for r in Role} == set(EXPECTED_PERMISSIONS)
    assert {p.value for p in Permission} == set().union(*EXPECTED_PERMISSIONS.values())
