"""Roles and permissions (docs/architecture.md, "Roles and permissions"). The role_permissions
table is seeded from ROLE_PERMISSIONS; PHRASES is how a refusal names each permission."""

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
    DISPATCH_TASKS = "dispatch_tasks"
    DISPATCH_ANY_PRIORITY = "dispatch_any_priority"  # the service role's: 8-10 without the named actions


class Role(str, Enum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    MANAGER = "manager"
    ADMIN = "admin"
    SERVICE = "service"  # a producer's API token: dispatch at any priority, nothing else


_VIEW = {Permission.VIEW_DASHBOARD, Permission.VIEW_TASKS}
_OPERATE = _VIEW | {Permission.PRIORITIZE_TASKS, Permission.DISPATCH_TASKS}
_MANAGE = _OPERATE | {Permission.URGENT_TASKS, Permission.CANCEL_TASKS, Permission.VIEW_HISTORY}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset(_VIEW),
    Role.OPERATOR: frozenset(_OPERATE),
    Role.MANAGER: frozenset(_MANAGE),
    Role.ADMIN: frozenset(_MANAGE | {Permission.CRITICAL_TASKS, Permission.MANAGE_USERS}),
    Role.SERVICE: frozenset({Permission.DISPATCH_TASKS, Permission.DISPATCH_ANY_PRIORITY}),
}

# What a refusal says a person may not do: "not allowed: viewer 'vera' may not <phrase>". An
# operation narrower than its permission says so itself (`authorize(..., doing=...)`).
PHRASES: dict[Permission, str] = {
    Permission.VIEW_DASHBOARD: "view the dashboard",
    Permission.VIEW_TASKS: "view tasks",
    Permission.VIEW_HISTORY: "view the priority history",
    Permission.PRIORITIZE_TASKS: "prioritize tasks",
    Permission.URGENT_TASKS: "make tasks urgent",
    Permission.CRITICAL_TASKS: "make tasks critical",
    Permission.CANCEL_TASKS: "cancel tasks",
    Permission.DISPATCH_TASKS: "dispatch tasks",
    Permission.DISPATCH_ANY_PRIORITY: "dispatch at any priority",
    Permission.MANAGE_USERS: "manage users",
}

UPGRADE_PERMISSIONS: dict[UpgradeAction, Permission] = {
    UpgradeAction.PRIORITIZE: Permission.PRIORITIZE_TASKS,
    UpgradeAction.URGENT: Permission.URGENT_TASKS,
    UpgradeAction.CRITICAL: Permission.CRITICAL_TASKS,
}


def dispatch_permission(priority: int) -> Permission | None:
    """Besides dispatch_tasks, what dispatching at `priority` needs: at 8, 9 and 10 the named
    action's permission (an escalation is an escalation, new task or not); None below 8."""
    for action, permission in UPGRADE_PERMISSIONS.items():
        if action.target == priority:
            return permission
    return None


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


def wanted_role_permissions() -> set[tuple[str, str]]:
    """ROLE_PERMISSIONS as (role, permission) rows."""
    return {(role.value, perm.value) for role, perms in ROLE_PERMISSIONS.items() for perm in perms}
