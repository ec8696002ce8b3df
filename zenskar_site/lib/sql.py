"""Database helpers for fixed, hot statements: the vendor, and one prepared-statement mechanism.

Django binds parameters on the client (it quotes every value, array elements included, into the SQL
text) and turns server-side prepared statements off for its connections. The statements run on every
ingestion request are worth more: `hot_rows` runs them as prepared statements, straight through
`psycopg.pq` (psycopg's public libpq wrapper), with psycopg's own adapters dumping the parameters
(arrays in binary) and loading the rows. A single-record request is one short statement, so the
general machinery of a psycopg cursor (query parsing, its prepared-statement manager, generators)
would cost more than the statement; the benchmark measured it (see the README's Benchmarks).

Each statement is prepared once per connection, under a name derived from its text and parameter
types. Errors are psycopg's own exceptions raised inside Django's `wrap_database_errors`, so an
outage is an OperationalError and a broken connection is retired by Django as with a cursor.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import select
import weakref
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper
from django.db.models import JSONField, Model

_PLACEHOLDER_RE = re.compile(r"%[sb%]")
# psycopg connection -> names of the statements prepared on it. Keyed weakly: a connection that
# Django closes (and replaces) takes its prepared statements with it, on the server too.
_prepared: weakref.WeakKeyDictionary[Any, set[bytes]] = weakref.WeakKeyDictionary()
# (statement text, parameter types) -> its name
_names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}


@functools.cache
def on_postgres() -> bool:
    """The database vendor, asked once per process (it never changes; the connection proxy costs a lookup)."""
    return connection.vendor == "postgresql"


def connection_retire_if_dropped() -> None:
    """Close the default connection if the server has dropped it (PostgreSQL restarted, the backend
    terminated), so that the request about to use it connects anew instead of failing.

    No round trip: the socket of an idle connection that LISTENs to nothing is readable only when the
    server sent something unasked, which is its goodbye (an error, then end-of-file) or a notice; libpq
    reads it and says whether the connection is still good. Django's own check (CONN_HEALTH_CHECKS)
    would cost a `SELECT 1` on every request, and it is skipped by `hot_rows`, which runs on the raw
    connection. A connection lost without a word (a network cut) still fails its next statement.
    """
    if not on_postgres():
        return
    database = connections[DEFAULT_DB_ALIAS]  # the proxy `connection` costs a lookup per attribute
    if database.connection is None or database.in_atomic_block:
        return
    from psycopg import Error, pq

    pgconn = database.connection.pgconn
    try:
        poller = select.poll()
        poller.register(pgconn.socket, select.POLLIN)
        # A goodbye is a message, then end-of-file: libpq sees the hang-up only on the read after the
        # one that took the message, so read while something is there (a few times at most).
        for _ in range(4):
            if pgconn.status != pq.ConnStatus.OK:
                break
            if not poller.poll(0):
                return  # nothing (more) arrived: the connection is as good as it was
            pgconn.consume_input()  # raises once the server has hung up
    except (Error, OSError):
        pass
    database.close()


def hot_rows(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run a fixed statement and return its rows, none for a statement without RETURNING (PostgreSQL:
    prepared; SQLite: Django's cursor).

    Placeholders are `%s`, and on PostgreSQL also `%b` for a parameter sent in binary (arrays).
    """
    if not on_postgres():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()]
    from psycopg import pq
    from psycopg.adapt import Transformer

    database = connections[DEFAULT_DB_ALIAS]  # the proxy `connection` costs a lookup per attribute
    database.ensure_connection()
    raw = database.connection
    text, formats = _converted(sql)
    with database.wrap_database_errors:
        transformer = Transformer(raw)
        values = transformer.dump_sequence(params, formats)
        types, value_formats = transformer.types, transformer.formats
        # Inside a transaction a failed execution would abort it, so the named statement is used only
        # in autocommit (the ingestion endpoint), where a statement found missing is prepared again.
        if settings.DB_PREPARED_STATEMENTS and raw.pgconn.transaction_status == pq.TransactionStatus.IDLE:
            result = _exec_prepared(raw, text, values, types, value_formats)
        else:
            result = raw.pgconn.exec_params(text, values, param_types=types, param_formats=value_formats)
        if result.status == pq.ExecStatus.COMMAND_OK:
            result.clear()
            return []
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise _error(raw, result)
        transformer.set_pgresult(result)
        rows: list[tuple[Any, ...]] = transformer.load_rows(0, result.ntuples, tuple)
        result.clear()
    return rows


def rows_insert(
    model: type[Model], *, columns: Sequence[str], rows: Sequence[Sequence[Any]], then: str = ""
) -> list[tuple[Any, ...]]:
    """PostgreSQL only: insert `rows` into `model`'s table in one statement, whose text does not depend
    on their number: each column goes as one binary array, and the arrays are unnested. (Django's
    bulk_create quotes every value into the statement's text on the client, which costs more than the
    insert itself when the rows are many.) `columns` are attnames of the model's concrete fields, each
    row their values as `Model.save` would store them (a JSON field's as its data, a date as a date);
    `then` follows the SELECT (`ON CONFLICT DO NOTHING RETURNING id`). Returns what RETURNING gives.

    Each array is cast to its column's type without a length or precision (a cast to varchar(n) would cut
    a longer text): the INSERT itself refuses a value too long, as bulk_create's would.
    """
    sql, json_columns = _insert_sql(model, tuple(columns), then)
    arrays: list[list[Any]] = [[] for _ in columns]
    for row in rows:
        for values, value in zip(arrays, row, strict=True):
            values.append(value)
    for index, encoder in json_columns:
        arrays[index] = [None if value is None else json.dumps(value, cls=encoder) for value in arrays[index]]
    from psycopg import Cursor

    connection.ensure_connection()
    # A cursor that binds on the server (Django's bind on the client, quoting each value into the text),
    # wrapped as Django wraps its own: its errors are Django's, its statements logged when Django logs
    # them, and psycopg begins Django's transaction before it if no statement has yet.
    wrapper = CursorDebugWrapper if connection.queries_logged else CursorWrapper
    with wrapper(Cursor(connection.connection), connection) as cursor:
        cursor.execute(sql, arrays)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


@functools.cache
def _insert_sql(model: type[Model], columns: tuple[str, ...], then: str) -> tuple[str, list[tuple[int, Any]]]:
    fields = {field.attname: field for field in model._meta.concrete_fields}
    casts: list[str] = []
    json_columns: list[tuple[int, Any]] = []
    for index, name in enumerate(columns):
        field = fields[name]
        db_type = re.sub(r"\(.*?\)", "", field.db_type(connection) or "")
        if isinstance(field, JSONField):
            json_columns.append((index, field.encoder))
            casts.append("%b::text[]::jsonb[]")
        else:
            casts.append(f"%b::{db_type}[]")
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(fields[name].column or name) for name in columns)
    # Names and types from the model's meta; `then` is the caller's fixed text. No value is in the text.
    sql = f"""
        INSERT INTO {table} ({names})
        SELECT * FROM unnest({", ".join(casts)})
        {then}
    """  # noqa: S608
    return sql, json_columns


@functools.cache
def _converted(sql: str) -> tuple[bytes, tuple[Any, ...]]:
    """The statement with libpq's $n placeholders, and each parameter's format (text-or-binary, or binary)."""
    from psycopg.adapt import PyFormat

    formats: list[Any] = []

    def number(match: re.Match[str]) -> str:
        if match.group() == "%%":
            return "%"
        formats.append(PyFormat.BINARY if match.group() == "%b" else PyFormat.AUTO)
        return f"${len(formats)}"

    return _PLACEHOLDER_RE.sub(number, sql).encode(), tuple(formats)


def _exec_prepared(raw: Any, text: bytes, values: Any, types: Any, value_formats: Any) -> Any:
    from psycopg import pq

    pgconn = raw.pgconn
    # The parameter types are part of the name: psycopg types a list by its elements (a list of
    # None, or of one element type), so one text may be prepared for a few type lists.
    key = (text, tuple(types))
    name = _names.get(key)
    if name is None:
        name = _names[key] = b"zk_" + hashlib.blake2b(repr(key).encode(), digest_size=10).hexdigest().encode()
    names = _prepared.setdefault(raw, set())
    for _ in range(2):
        if name not in names:
            result = pgconn.prepare(name, text, param_types=types)
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise _error(raw, result)
            names.add(name)
        result = pgconn.exec_prepared(name, values, param_formats=value_formats)
        # psycopg deallocates every prepared statement of the session after a ROLLBACK (its own
        # cache's rule), ours included, and so does DEALLOCATE ALL: prepare again and run once more.
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
