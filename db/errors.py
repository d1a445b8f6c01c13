"""The errors a person or an operator may see, from the lowest layer up.

They start here because the database is where the first of them happen (an outage, an old
schema, a value it refuses) and db imports nothing from core. core.errors re-exports these and
adds the rest; callers import them from there. Each message is one line a person can act on.
"""


class SwitchyardError(Exception):
    """Base for every error a user or operator may see."""


class InvalidInput(SwitchyardError):
    """Bad input: a value out of range, an unknown name, text the database refuses."""


class DatabaseUnavailable(SwitchyardError):
    pass


class ReadTimedOut(DatabaseUnavailable):
    """A read a person or a service asked for ran past its time limit and was stopped."""


class SchemaOutdated(SwitchyardError):
    """The database's schema is not the one this version needs (or there is none yet)."""
