"""Fixed statements of the ingestion hot path, sent straight through libpq (PostgreSQL only).

A single-record request is one short statement, so the driver's own work per call (the query
conversion, the adapters, the prepared-statement bookkeeping of psycopg's cursor) costs more than
the statement itself. These statements take only scalar parameters, so they go through
`psycopg.pq` (psycopg's public libpq wrapper, the C build in production): the parameters are sent as
text and each statement is prepared once per connection under a name derived from its text.
Errors are psycopg's own exceptions raised inside Django's `wrap_database_errors`, so an outage is
an OperationalError and a broken connection is retired by Django exactly as with a cursor.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import weakref
from typing import Any

from django.conf import settings
from django.db import connections

Param = str | int | bool | dt.datetime | None

# psycopg connection -> names of the statements prepared on it. Keyed weakly: a connection that
# Django closes (and replaces) takes its prepared statements with it, on the server too.
_prepared: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()
# statement text -> (its name, its bytes)
_statements: dict[str, tuple[bytes, bytes]] = {}


def _text(value: Param) -> bytes | None:
    if value is None:
        return None
    if value is True:
        return b"t"
    if value is False:
        return b"f"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime sent to the database")
        return value.isoformat().encode()
    return str(value).encode()


def hot_rows(sql: str, params: list[Param], *, alias: str = "default") -> list[tuple[str | None, ...]]:
    """Run `sql` (with $1, $2... placeholders) and return its rows as text values (None for NULL)."""
    from psycopg import pq

    connection = connections[alias]
    connection.ensure_connection()
    raw = connection.connection
    pgconn = raw.pgconn
    values = [_text(p) for p in params]
    with connection.wrap_database_errors:
        # Inside a transaction a failed execution would abort it, so the named statement is used only
        # in autocommit (the ingestion endpoint), where a statement found missing is prepared again.
        if settings.DB_PREPARED_STATEMENTS and pgconn.transaction_status == pq.TransactionStatus.IDLE:
            result = _exec_prepared(raw, sql, values)
        else:
            result = pgconn.exec_params(sql.encode(), values)
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise _error(raw, result)
        rows = [
            tuple(None if (v := result.get_value(r, c)) is None else bytes(v).decode() for c in range(result.nfields))
            for r in range(result.ntuples)
        ]
        result.clear()
    return rows


def _exec_prepared(raw: Any, sql: str, values: list[bytes | None]) -> Any:
    from psycopg import pq

    pgconn = raw.pgconn
    statement = _statements.get(sql)
    if statement is None:
        text = sql.encode()
        statement = _statements[sql] = (b"zk_" + hashlib.blake2b(text, digest_size=10).hexdigest().encode(), text)
    name, text = statement
    names = _prepared.setdefault(raw, set())
    for _ in range(2):
        if name not in names:
            result = pgconn.prepare(name, text)
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise _error(raw, result)
            names.add(name)
        result = pgconn.exec_prepared(name, values)
        # psycopg deallocates every prepared statement of the session after a ROLLBACK (its own
        # cache's rule), ours included: prepare again and run once more.
        if result.error_field(pq.DiagnosticField.SQLSTATE) != b"26000":
            return result
        names.clear()
    return result


def _error(raw: Any, result: Any) -> Exception:
    """psycopg's exception for a failed result; a lost connection is an OperationalError, as psycopg raises it."""
    from psycopg import errors, pq

    if raw.pgconn.status == pq.ConnStatus.BAD or result.error_field(pq.DiagnosticField.SQLSTATE) is None:
        message = (result.error_message or raw.pgconn.error_message or b"connection lost").decode(errors="replace")
        return errors.OperationalError(message.strip())
    return errors.error_from_result(result, encoding=raw.info.encoding)
