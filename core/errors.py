"""Typed errors. Each message is one line a person can act on; callers print str(error)."""


class SwitchyardError(Exception):
    """Base for every error a user or operator may see."""


class InvalidInput(SwitchyardError):
    pass


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


class DatabaseUnavailable(SwitchyardError):
    pass


class SchemaOutdated(SwitchyardError):
    """The database's schema is not the one this version needs (or there is none yet)."""
