"""Switchyard command line: the console, workers, and every operator action.

    python run.py [serve] [--demo] [--host H] [--port P] [--workers N]
    python run.py worker [--buckets high,normal,low] [--category C ...] [--phase P ...] [--concurrency N]
    python run.py dispatch NAME [--category C] [--phase P] [--priority N] [--args JSON] [--correlation-id ID]
    python run.py upgrade TASK_ID --action prioritize|urgent|critical --reason TEXT --as USERNAME
    python run.py cancel TASK_ID --as USERNAME
    python run.py retry TASK_ID --as USERNAME
    python run.py status TASK_ID
    python run.py depths
    python run.py users create USERNAME --role ROLE     (password: SWITCHYARD_PASSWORD or a prompt)
    python run.py db upgrade | db current
    python run.py tokens create USERNAME --name NAME    (prints the API token, shown once)
    python run.py tokens revoke TOKEN_ID_OR_PREFIX
    python run.py tokens list USERNAME

After `pip install`, `switchyard ...` is the same command.

Errors print one line on stderr and exit non-zero:
2 bad input, 3 not found, 4 not allowed, 5 wrong state / not an upgrade / conflict, 6 broker or
database unavailable, 7 database schema not current (run `python run.py db upgrade`).

This module only parses arguments, calls core and maps errors to exit codes. Imports are inside
the commands so `--help` and a usage error answer at once.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from typing import Callable, Mapping, Sequence

from core.errors import (
    BrokerUnavailable,
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotAllowed,
    NotAnUpgrade,
    NotFound,
    SchemaOutdated,
    SwitchyardError,
    WrongState,
)
from core.settings import Settings

EXIT_CODES = {
    InvalidInput: 2,
    NotFound: 3,
    NotAllowed: 4,
    WrongState: 5,
    NotAnUpgrade: 5,
    Conflict: 5,
    BrokerUnavailable: 6,
    DatabaseUnavailable: 6,
    SchemaOutdated: 7,
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, like every other error here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InvalidInput(f"{message} (see: python {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="run.py", description="Switchyard: priority task queues on NATS JetStream")
    commands = parser.add_subparsers(dest="command", parser_class=OneLineParser)

    serve = commands.add_parser("serve", help="the web console (and embedded broker/database when not configured)")
    serve.add_argument("--demo", action="store_true", help="also run workers and demo producers")
    serve.add_argument("--host", help="address to listen on (default SWITCHYARD_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default SWITCHYARD_PORT or 8050)")
    serve.add_argument("--workers", type=int, default=None, help="in-process workers (default 0, 2 with --demo)")

    worker = commands.add_parser("worker", help="run a priority-aware worker until stopped")
    worker.add_argument("--buckets", default="high,normal,low", help="comma-separated, taken in priority order")
    worker.add_argument("--category", action="append", default=[], help="only this category (repeatable)")
    worker.add_argument("--phase", action="append", default=[], help="only this phase (repeatable)")
    worker.add_argument("--concurrency", type=int, default=1, help="tasks run at once (default 1)")
    worker.add_argument("--no-maintenance", action="store_true", help="do not run relay, reaper and reconciler")
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics here (default SWITCHYARD_WORKER_METRICS_PORT)",
    )

    dispatch = commands.add_parser("dispatch", help="queue a task; prints its id")
    dispatch.add_argument("name")
    dispatch.add_argument("--category")
    dispatch.add_argument("--phase")
    dispatch.add_argument("--priority", default="5", help="0-10 (default 5)")
    dispatch.add_argument("--args", default=None, help="JSON object of arguments")
    dispatch.add_argument("--correlation-id", default=None)
    dispatch.add_argument("--max-attempts", type=int, default=None)

    upgrade = commands.add_parser("upgrade", help="raise a queued task's priority")
    upgrade.add_argument("task_id")
    upgrade.add_argument("--action", required=True, help="prioritize, urgent or critical")
    upgrade.add_argument("--reason", required=True)
    upgrade.add_argument("--as", dest="user", required=True, help="acting user name")

    for name, text in (("cancel", "cancel a queued task"), ("retry", "re-run a failed task")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("task_id")
        sub.add_argument("--as", dest="user", required=True, help="acting user name")

    status = commands.add_parser("status", help="print a task as JSON, with its priority history")
    status.add_argument("task_id")

    commands.add_parser("depths", help="print queue depths as JSON")

    database = commands.add_parser("db", help="the database schema")
    db_commands = database.add_subparsers(dest="db_command", parser_class=OneLineParser)
    db_commands.add_parser("upgrade", help="create or migrate the schema to this version (safe to repeat)")
    db_commands.add_parser("current", help="print the schema revision and whether it is this version's")

    users = commands.add_parser("users", help="manage users")
    user_commands = users.add_subparsers(dest="users_command", parser_class=OneLineParser)
    create = user_commands.add_parser("create", help="create a user")
    create.add_argument("username")
    create.add_argument("--role", required=True, help="viewer, operator, manager or admin")

    tokens = commands.add_parser("tokens", help="manage API tokens (docs/api.md)")
    token_commands = tokens.add_subparsers(dest="tokens_command", parser_class=OneLineParser)
    token_create = token_commands.add_parser("create", help="create a token; prints it (shown once)")
    token_create.add_argument("username")
    token_create.add_argument("--name", required=True, help="what will use it, e.g. nightly-etl")
    token_revoke = token_commands.add_parser("revoke", help="revoke a token")
    token_revoke.add_argument("token", help="its id or its prefix (swy_...), as `tokens list` shows")
    token_list = token_commands.add_parser("list", help="a user's tokens as JSON (never the secrets)")
    token_list.add_argument("username")
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "serve")
    try:
        args = build_parser().parse_args(args_list)
        from core.settings import load_settings

        settings = load_settings(environ)
        _configure_logging(args.command, settings)
        return COMMANDS[args.command](args, settings, environ) or 0
    except SwitchyardError as error:
        print(f"error: {_printable(error)}", file=sys.stderr)
        return next((code for kind, code in EXIT_CODES.items() if isinstance(error, kind)), 1)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug: still one line, never a traceback
        logging.getLogger("switchyard").debug("unexpected error", exc_info=True)
        print(
            f"error: unexpected {type(error).__name__}: {_printable(error)} (a bug: please report it)", file=sys.stderr
        )
        return 1


def _printable(error: BaseException) -> str:
    """The message on one line, printable whatever bytes the arguments held."""
    return " ".join(str(error).split()).encode("utf-8", "backslashreplace").decode("utf-8")


def _configure_logging(command: str, settings: Settings) -> None:
    from core.observe import logs

    daemon = command in ("serve", "worker")
    level = settings.log_level.upper() if daemon else "WARNING"
    logs.configure(getattr(logging, level), settings.log_format if daemon else "text")


def _runtime(settings: Settings, *, require_broker: bool = False, connect_broker: bool = True):
    from core.runtime import Runtime

    return Runtime.open(settings, require_broker=require_broker, connect_broker=connect_broker)


def _database(settings: Settings, *, check: bool = True):
    from core.runtime import open_database

    return open_database(settings, check=check)


def cmd_dispatch(args, settings: Settings, environ) -> int:
    from core.tasks.rows import parse_args_json

    with _runtime(settings) as runtime:
        task_id = runtime.service.dispatch_task(
            args.name,
            args=parse_args_json(args.args),
            priority=args.priority,
            category=args.category,
            phase=args.phase,
            correlation_id=args.correlation_id,
            max_attempts=args.max_attempts,
            created_by="cli",
        )
        print(task_id)
        runtime.service.flush()
        problem = runtime.broker_error or runtime.service.last_publish_error
        if problem:
            print(
                f"warning: {problem}; the task is stored and will be published when the broker is back", file=sys.stderr
            )
    return 0


def cmd_upgrade(args, settings: Settings, environ) -> int:
    with _runtime(settings) as runtime:
        print(runtime.service.upgrade_task(args.task_id, args.action, args.reason, args.user).describe())
    return 0


def cmd_cancel(args, settings: Settings, environ) -> int:
    with _runtime(settings) as runtime:
        runtime.service.cancel_task(args.task_id, args.user)
        print(f"task {args.task_id} cancelled")
    return 0


def cmd_retry(args, settings: Settings, environ) -> int:
    with _runtime(settings) as runtime:
        runtime.service.retry_task(args.task_id, args.user)
        print(f"task {args.task_id} queued again")
    return 0


def cmd_status(args, settings: Settings, environ) -> int:
    from core.tasks.reads import describe_task

    with _database(settings) as db:
        print(json.dumps(describe_task(db, args.task_id), indent=2))
    return 0


def cmd_depths(args, settings: Settings, environ) -> int:
    from core.observe.stats import system_depths

    with _runtime(settings, require_broker=True) as runtime:
        print(json.dumps(system_depths(runtime.db, runtime.broker), indent=2))
    return 0


def cmd_db(args, settings: Settings, environ) -> int:
    from core.runtime import describe_schema, upgrade_database

    if args.db_command not in ("upgrade", "current"):
        raise InvalidInput("use: python run.py db upgrade | db current")
    with _database(settings, check=False) as db:
        if args.db_command == "upgrade":
            before, after = upgrade_database(db)
            print(f"schema at {after}" + (f" (was {before or 'empty'})" if before != after else " (already current)"))
        else:
            print(describe_schema(db))
    return 0


def cmd_users(args, settings: Settings, environ) -> int:
    from core.auth.users import create_user

    if args.users_command != "create":
        raise InvalidInput("use: python run.py users create USERNAME --role ROLE")
    password = environ.get("SWITCHYARD_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            raise InvalidInput("set SWITCHYARD_PASSWORD or run in a terminal to be asked for the password")
        password = getpass.getpass(f"password for {args.username}: ")
        if password != getpass.getpass("again: "):
            raise InvalidInput("the two passwords differ")
    with _database(settings) as db:
        user = create_user(db, args.username, password, args.role, created_by="cli")
        print(f"user {user.username} created with role {user.role}")
    return 0


def cmd_tokens(args, settings: Settings, environ) -> int:
    from core.auth import tokens

    if args.tokens_command not in ("create", "revoke", "list"):
        raise InvalidInput("use: python run.py tokens create USERNAME --name NAME | revoke TOKEN | list USERNAME")
    with _database(settings) as db:
        if args.tokens_command == "create":
            print(tokens.system_create_token(db, args.username, args.name).secret)
        elif args.tokens_command == "revoke":
            info = tokens.system_revoke_token(db, args.token)
            print(f"token {info.prefix} ({info.name}) of {info.username} revoked")
        else:
            print(json.dumps([t.as_dict() for t in tokens.system_list_tokens(db, args.username)], indent=2))
    return 0


def cmd_worker(args, settings: Settings, environ) -> int:
    from core.engine.worker import worker_scope
    from core.runtime import run_worker_process

    scope = worker_scope(settings, args.buckets, args.category, args.phase, args.concurrency)
    metrics_port = settings.worker_metrics_port if args.metrics_port is None else args.metrics_port
    run_worker_process(
        settings,
        scope,
        concurrency=args.concurrency,
        maintenance=not args.no_maintenance,
        metrics_port=metrics_port,
    )
    return 0


def cmd_serve(args, settings: Settings, environ) -> int:
    from dashboard.server import serve

    serve(
        settings,
        host=args.host or settings.host,
        port=settings.port if args.port is None else args.port,
        worker_count=args.workers if args.workers is not None else (2 if args.demo else 0),
        demo=args.demo,
        admin_password=environ.get("SWITCHYARD_ADMIN_PASSWORD") or None,
    )
    return 0


COMMANDS: dict[str, Callable[..., int]] = {
    "db": cmd_db,
    "serve": cmd_serve,
    "worker": cmd_worker,
    "dispatch": cmd_dispatch,
    "upgrade": cmd_upgrade,
    "cancel": cmd_cancel,
    "retry": cmd_retry,
    "status": cmd_status,
    "depths": cmd_depths,
    "users": cmd_users,
    "tokens": cmd_tokens,
}


if __name__ == "__main__":
    sys.exit(main())
