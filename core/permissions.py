"""Roles and permissions (DESIGN section 2). The role_permissions table is seeded from here."""

from __future__ import annotations

from enum import Enum

from core.errors import InvalidInput
from core.priority import UpgradeAction


class Permission(str, Enum):
    VIEW_DASHBOARD = "view_dashboard"
    VIEW_TASKS = "view_tasks"
    PRIORITIZE_TASKS = "prioritize_tasks"
    URGENT_TASKS = "urgent_tasks"
    CANCEL_TASKS = "cancel_tasks"
    CRITICAL_TASKS = "critical_tasks"
    MANAGE_USERS = "manage_users"
    VIEW_HISTORY = "view_history"
    DISPATCH_TASKS = "dispatch_tasks"  # not in DESIGN section 2: see docs/architecture.md


class Role(str, Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    MANAGER = "manager"
    ADMIN = "admin"


_VIEW = {Permission.VIEW_DASHBOARD, Permission.VIEW_TASKS}
_OPERATE = _VIEW | {Permission.PRIORITIZE_TASKS, Permission.DISPATCH_TASKS}
_MANAGE = _OPERATE | {Permission.URGENT_TASKS, Permission.CANCEL_TASKS, Permission.VIEW_HISTORY}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset(_VIEW),
    Role.OPERATOR: frozenset(_OPERATE),
    Role.MANAGER: frozenset(_MANAGE),
    Role.ADMIN: frozenset(_MANAGE | {Permission.CRITICAL_TASKS, Permission.MANAGE_USERS}),
}

UPGRADE_PERMISSIONS: dict[UpgradeAction, Permission] = {
    UpgradeAction.PRIORITIZE: Permission.PRIORITIZE_TASKS,
    UpgradeAction.URGENT: Permission.URGENT_TASKS,
    UpgradeAction.CRITICAL: Permission.CRITICAL_TASKS,
}

RETRY_PERMISSION = Permission.PRIORITIZE_TASKS
CANCEL_PERMISSION = Permission.CANCEL_TASKS
DISPATCH_PERMISSION = Permission.DISPATCH_TASKS


def parse_role(value: object) -> Role:
    if isinstance(value, Role):
        return value
    try:
        return Role(str(value).strip().lower())
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise InvalidInput(f"unknown role {value!r}: use one of {names}") from None
