"""Group commit: database work from many coroutines shares one write transaction.

A worker's slots each need a short write per task (finish the last task, claim the next,
extend a lease). Committing each on its own makes the commit, not the work, the cost. Here
work queued while a transaction is being written waits for the next one and shares it.
Each piece of work is a function of an open Connection and must be safe to run again: when
one piece raises, the transaction is rolled back and every piece is run again on its own, so
one bad piece cannot take the others down with it.
"""

from __future__ import annotations

import asyncio
import contextvars
from concurrent.futures import Executor
from typing import Any, Callable

from core.errors import DatabaseUnavailable
from db import dialect
from db.engine import Connection, Database

Work = Callable[[Connection], Any]


class GroupCommit:
    def __init__(self, db: Database, executor: Executor):
        self._db = db
        self._executor = executor
        self._pending: list[tuple[Work, asyncio.Future]] = []
        self._writing = False

    async def run(self, work: Work) -> Any:
        """Run `work` in the next shared transaction; its result once that has committed."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((work, future))
        if not self._writing:
            self._writing = True
            asyncio.ensure_future(self._write_pending())
        return await future

    async def _write_pending(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.sleep(0)  # work queued in this same turn of the loop joins this commit
            while self._pending:
                batch, self._pending = self._pending, []
                works = [work for work, _ in batch]
                context = contextvars.copy_context()  # the log context, which executors do not carry
                results = await loop.run_in_executor(self._executor, context.run, self._commit, works)
                for (_, future), result in zip(batch, results):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._writing = False

    def _commit(self, works: list[Work]) -> list[Any]:
        """On a database thread. One result (or exception) per piece of work."""
        try:
            with self._db.connect(write=True) as connection:
                dialect.relax_durability(connection)  # docs/architecture.md, "Worker speed decisions"
                return [work(connection) for work in works]
        except DatabaseUnavailable as error:
            return [error] * len(works)
        except Exception as error:
            if len(works) == 1:
                return [error]
            return [self._commit([work])[0] for work in works]
