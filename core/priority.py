"""The priority model: levels 0-10, three buckets, named upgrade actions, subjects."""

from __future__ import annotations

from enum import Enum, IntEnum

from core.errors import InvalidInput


class Priority(IntEnum):
    LOWEST = 0
    MAINTENANCE = 1
    BACKGROUND = 2
    LOW = 3
    BELOW_NORMAL = 4
    NORMAL = 5
    ABOVE_NORMAL = 6
    HIGH = 7
    PRIORITIZE = 8
    URGENT = 9
    CRITICAL = 10

    @property
    def label(self) -> str:
        return PRIORITY_LABELS[self]


PRIORITY_LABELS = {
    Priority.LOWEST: "Lowest",
    Priority.MAINTENANCE: "Maintenance",
    Priority.BACKGROUND: "Background",
    Priority.LOW: "Low",
    Priority.BELOW_NORMAL: "Below normal",
    Priority.NORMAL: "Normal",
    Priority.ABOVE_NORMAL: "Above normal",
    Priority.HIGH: "High",
    Priority.PRIORITIZE: "Prioritize",
    Priority.URGENT: "Urgent",
    Priority.CRITICAL: "Critical",
}

DEFAULT_PRIORITY = Priority.NORMAL


class Bucket(str, Enum):
    """Workers drain buckets in declaration order: high, then normal, then low."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


BUCKETS_IN_ORDER: tuple[Bucket, ...] = (Bucket.HIGH, Bucket.NORMAL, Bucket.LOW)


def priority_to_bucket(priority: int) -> Bucket:
    level = parse_priority(priority)
    if level >= Priority.PRIORITIZE:
        return Bucket.HIGH
    if level >= Priority.BELOW_NORMAL:
        return Bucket.NORMAL
    return Bucket.LOW


def parse_priority(value: object) -> Priority:
    if isinstance(value, bool):
        raise InvalidInput(f"priority must be a whole number from 0 to 10, not {value!r}")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise InvalidInput(f"priority must be a whole number from 0 to 10, not {value!r}") from None
    if not 0 <= number <= 10:
        raise InvalidInput(f"priority must be a whole number from 0 to 10, not {value!r}")
    return Priority(number)


def parse_bucket(value: str | Bucket) -> Bucket:
    if isinstance(value, Bucket):
        return value
    try:
        return Bucket(value.strip().lower())
    except (ValueError, AttributeError):
        names = ", ".join(b.value for b in BUCKETS_IN_ORDER)
        raise InvalidInput(f"unknown bucket {value!r}: use one of {names}") from None


class UpgradeAction(str, Enum):
    """Named upgrades: operators never type a number."""

    PRIORITIZE = "prioritize"
    URGENT = "urgent"
    CRITICAL = "critical"

    @property
    def target(self) -> Priority:
        return UPGRADE_TARGETS[self]


UPGRADE_TARGETS = {
    UpgradeAction.PRIORITIZE: Priority.PRIORITIZE,
    UpgradeAction.URGENT: Priority.URGENT,
    UpgradeAction.CRITICAL: Priority.CRITICAL,
}


def parse_upgrade_action(value: object) -> UpgradeAction:
    if isinstance(value, UpgradeAction):
        return value
    try:
        return UpgradeAction(str(value).strip().lower())
    except ValueError:
        names = ", ".join(a.value for a in UpgradeAction)
        raise InvalidInput(f"unknown action {str(value)[:40]!r}: use one of {names}") from None


DEFAULT_CATEGORIES: tuple[str, ...] = ("etl", "webapp", "report", "alert")
PHASES: tuple[str, ...] = ("extract", "transform", "load", "default")
SUBJECT_ROOT = "tasks"


def subject_for(category: str, phase: str, bucket: Bucket | str) -> str:
    return f"{SUBJECT_ROOT}.{category}.{phase}.{Bucket(bucket).value}"


def subject_parts(subject: str) -> tuple[str, str, str]:
    """(category, phase, bucket) of a task subject."""
    _, category, phase, bucket = subject.split(".")
    return category, phase, bucket
