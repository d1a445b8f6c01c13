"""Typed errors. Each message is one line a person can act on; callers print str(error).

The base and the errors the database raises are defined in db.errors (db imports nothing from
core); they are re-exported here so every caller imports errors from one place.
"""

from db.errors import DatabaseUnavailable, InvalidInput, ReadTimedOut, SchemaOutdated, SwitchyardError

__all__ = [
    "SwitchyardError",
    "InvalidInput",
    "DatabaseUnavailable",
    "ReadTimedOut",
    "SchemaOutdated",
    "NotFound",
    "NotAllowed",
    "WrongState",
    "NotAnUpgrade",
    "Conflict",
    "BrokerUnavailable",
]


class NotFound(SwitchyardError):
    pass


class NotAllowed(SwitchyardError):
    pass


class WrongState(SwitchyardError):
    pass


class NotAnUpgrade(SwitchyardError):
    pass


class Conflict(SwitchyardError):
    """Someone else changed the task between our read and our write."""


class BrokerUnavailable(SwitchyardError):
    pass
