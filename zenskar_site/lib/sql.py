"""Database helpers for fixed, hot statements: the vendor, and one prepared-statement mechanism.

Django binds parameters on the client (it quotes every value, array elements included, into the SQL
text) and turns psycopg's server-side prepared statements off for its connections. A statement run
on every request is worth more: `prepared_cursor` sends parameters separately (arrays in binary) and
lets psycopg prepare the statement once per connection. psycopg keeps its own cache of prepared
statements, re-prepares after a `DEALLOCATE ALL` or a rollback, and raises its own exceptions, which
`wrap_database_errors` turns into Django's (an outage is an OperationalError like anywhere else).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connection


@functools.cache
def on_postgres() -> bool:
    """The database vendor, asked once per process (it never changes; the connection proxy costs a lookup)."""
    return connection.vendor == "postgresql"


@contextmanager
def prepared_cursor() -> Iterator[Any]:
    """A DB-API cursor for fixed statements: on PostgreSQL, server-side binding and prepared statements.

    On SQLite, Django's own cursor. Placeholders are `%s` (and `%b` for a binary parameter on PostgreSQL).
    """
    if not on_postgres():
        with connection.cursor() as cursor:
            yield cursor
        return
    import psycopg

    connection.ensure_connection()
    raw = connection.connection
    prepare = settings.DB_PREPARED_STATEMENTS
    if prepare and raw.prepare_threshold is None:
        # Django turns psycopg's prepared statements off for the connection (its ORM cursors bind on the
        # client and never prepare, so turning them back on changes nothing for the ORM).
        raw.prepare_threshold = 5
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        # prepare=True prepares on first use (psycopg names and caches it per connection); None leaves
        # preparing off (DB_PREPARED_STATEMENTS off: behind PgBouncer in transaction mode).
        yield _Prepared(cursor, prepare=True if prepare else None)


class _Prepared:
    def __init__(self, cursor: Any, *, prepare: bool | None) -> None:
        self.cursor = cursor
        self.prepare = prepare

    def execute(self, sql: str, params: list[Any]) -> None:
        self.cursor.execute(sql, params, prepare=self.prepare)

    def fetchone(self) -> Any:
        return self.cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self.cursor.fetchall())
