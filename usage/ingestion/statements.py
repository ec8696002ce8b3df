"""The one write statement of ingestion, generated from one definition of the record columns.

Every new record (API requests, CSV imports, events and aggregates) is stored by the statement this
module generates for the database in use:

- PostgreSQL: ONE statement for the whole request, so it is atomic even in autocommit (no BEGIN and
  COMMIT round trips): a guard (the usage event exists; for a cached context, the key is still active
  and the definition unchanged), the error log's rows, the records (one array per column, unnested,
  in order) and the dirty-hour marks. The records go in either as a plain INSERT, which fails as a
  whole on an idempotency key already taken, or with `ON CONFLICT DO NOTHING` on the key, which skips
  the records whose key is taken; usage/ingestion/store.py says which it runs when.
- SQLite: one multi-row INSERT of the records; the caller's transaction writes the rest.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

from usage.models import DirtyBucket, IngestionError, UsageEvent, UsageRecord
from zenskar_site.accounts.models import ApiKey


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    per_record: bool = True  # False: one value for the whole statement
    wire_type: str | None = None  # the type a batch's array carries when it is not `pg_type`

    @property
    def quoted(self) -> str:
        return f'"{self.name}"'


# The columns of usage_usagerecord that a write sets, in order: the one definition every
# statement and its parameters are generated from.
RECORD_COLUMNS: tuple[Column, ...] = (
    Column("usage_event_id", "bigint", per_record=False),
    Column("customer_id", "text"),
    Column("timestamp", "timestamptz"),
    Column("period_start", "timestamptz"),
    Column("data", "jsonb", wire_type="text"),  # JSON text, parsed once by the server
    Column("idempotency_key", "text"),
    Column("content_hash", "text"),
    Column("received_at", "timestamptz", per_record=False),
    Column("voided", "boolean", per_record=False),
    Column("superseded", "boolean", per_record=False),
)
_CONFLICT = "ON CONFLICT (usage_event_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
IDEMPOTENCY_CONSTRAINT = "usage_record_unique_idempotency_key"  # the unique index a taken key violates


class RecordRow(NamedTuple):
    """One record as stored: the per-record columns of RECORD_COLUMNS, in their order. A named tuple: one
    is built per record of every batch, and the rows transpose into the statement's arrays in one step."""

    customer_id: str
    timestamp: dt.datetime
    period_start: dt.datetime | None
    data: str
    idempotency_key: str | None
    content_hash: str


@dataclass(frozen=True)
class RecordsWrite:
    """One statement's records: the per-statement columns of RECORD_COLUMNS, and the rows."""

    usage_event_id: int
    received_at: dt.datetime
    superseded: bool
    rows: list[RecordRow]
    voided: bool = False


def _column_values(write: RecordsWrite) -> dict[str, Any]:
    """Each column's value by name: a list with one value per row for a per-record column, else the one value."""
    per_record = RecordRow._fields
    arrays = [list(values) for values in zip(*write.rows, strict=True)] if write.rows else [[] for _ in per_record]
    values: dict[str, Any] = dict(zip(per_record, arrays, strict=True))
    for column in RECORD_COLUMNS:
        if not column.per_record:
            values[column.name] = getattr(write, column.name)
    return values


# --- PostgreSQL ---


@dataclass(frozen=True)
class PostgresWrite:
    records: RecordsWrite
    error_rows: list[tuple[str, bool, str]]  # (payload JSON, truncated, errors JSON)
    api_key_prefix: str
    dirty_hours: list[dt.datetime]
    guard: tuple[int, dt.datetime] | None  # (api key id, usage event updated_at) of a cached context


@functools.cache
def postgres_write_sql(*, guarded: bool, with_errors: bool, skip_taken_keys: bool) -> str:
    """The whole request in one statement; its first row counts the guard's rows, then (id, key) per record.
    Without `skip_taken_keys`, a record whose idempotency key is taken fails the statement (nothing written)."""
    per_record = [c for c in RECORD_COLUMNS if c.per_record]
    arrays = ", ".join(f"%b::{c.wire_type or c.pg_type}[]" for c in per_record)
    names = ", ".join(c.quoted for c in per_record)
    selected = ", ".join(
        (f"t.{c.quoted}::{c.pg_type}" if c.wire_type else f"t.{c.quoted}") if c.per_record else f"%s::{c.pg_type}"
        for c in RECORD_COLUMNS
    )
    # The error log's part is left out when there is nothing to log (most requests): every
    # data-modifying CTE costs the server time even when it inserts nothing.
    errors = (
        f"""errs AS (
            INSERT INTO {IngestionError._meta.db_table}
                (usage_event_id, received_at, payload, payload_truncated, errors, api_key_prefix)
            SELECT %s, %s, e.payload::jsonb, e.truncated, e.errors::jsonb, %s
            FROM unnest(%b::text[], %b::bool[], %b::text[]) AS e(payload, truncated, errors)
            WHERE EXISTS (SELECT 1 FROM ok)
        ), """
        if with_errors
        else ""
    )
    return f"""
        WITH ok AS ({_guard_sql(guarded=guarded)}), {errors}ins AS (
            INSERT INTO {UsageRecord._meta.db_table} ({", ".join(c.quoted for c in RECORD_COLUMNS)})
            SELECT {selected}
            FROM unnest({arrays}) WITH ORDINALITY AS t({names}, ord)
            WHERE EXISTS (SELECT 1 FROM ok)
            ORDER BY t.ord
            {_CONFLICT if skip_taken_keys else ""}
            RETURNING id, idempotency_key
        ), dirty AS (
            INSERT INTO {DirtyBucket._meta.db_table} (usage_event_id, hour_start)
            SELECT %s, h FROM unnest(%b::timestamptz[]) AS h WHERE EXISTS (SELECT 1 FROM ins)
        )
        SELECT 0 AS part, (SELECT count(*) FROM ok) AS id, NULL AS idempotency_key
        UNION ALL
        SELECT 1, id, idempotency_key FROM ins
        ORDER BY part, id
    """


def postgres_write_params(write: PostgresWrite) -> list[Any]:
    """The parameters of postgres_write_sql, in the order of its placeholders."""
    records = write.records
    params: list[Any] = [records.usage_event_id]
    if write.guard is not None:
        params += [write.guard[0], write.guard[1]]
    if write.error_rows:
        params += [records.usage_event_id, records.received_at, write.api_key_prefix]
        params += [[row[part] for row in write.error_rows] for part in range(3)]
    values = _column_values(records)
    params += [values[c.name] for c in RECORD_COLUMNS if not c.per_record]
    params += [values[c.name] for c in RECORD_COLUMNS if c.per_record]
    params += [records.usage_event_id, write.dirty_hours]
    return params


@functools.cache
def postgres_write_one_sql(*, guarded: bool, skip_taken_keys: bool) -> str:
    """A single-record request without errors to log (most of the traffic): the same columns and guard as
    postgres_write_sql, but scalar parameters and no separate guard CTE and counts, which the benchmark
    showed cost a single record a fifth of its throughput. One row back means stored; none means the
    guard failed or (with `skip_taken_keys`) the idempotency key is taken: the caller tells them apart."""
    values = ", ".join(f"%s::{c.pg_type}" for c in RECORD_COLUMNS)
    return f"""
        WITH ins AS (
            INSERT INTO {UsageRecord._meta.db_table} ({", ".join(c.quoted for c in RECORD_COLUMNS)})
            SELECT {values}
            WHERE EXISTS ({_guard_sql(guarded=guarded)})
            {_CONFLICT if skip_taken_keys else ""}
            RETURNING id, idempotency_key
        ), dirty AS (
            INSERT INTO {DirtyBucket._meta.db_table} (usage_event_id, hour_start) SELECT %s, %s FROM ins
        )
        SELECT id, idempotency_key FROM ins
    """


def postgres_write_one_params(write: PostgresWrite) -> list[Any]:
    """The parameters of postgres_write_one_sql for a write of exactly one record and no error rows."""
    records = write.records
    (row,) = records.rows
    params: list[Any] = [getattr(row if c.per_record else records, c.name) for c in RECORD_COLUMNS]
    params.append(records.usage_event_id)
    if write.guard is not None:
        params += [write.guard[0], write.guard[1]]
    params += [records.usage_event_id, write.dirty_hours[0]]
    return params


def _guard_sql(*, guarded: bool) -> str:
    """The query the write requires a row from: the usage event exists (records have no foreign-key
    constraint, see usage/migrations/0005) and, for a cached context, the key is still active and the
    usage event unchanged (same updated_at, not archived). If it finds no row, nothing is written."""
    events = UsageEvent._meta.db_table
    if not guarded:
        return f"SELECT 1 FROM {events} e WHERE e.id = %s"
    return f"""SELECT 1 FROM {ApiKey._meta.db_table} k JOIN {events} e ON e.id = %s
        WHERE k.id = %s AND k.revoked_at IS NULL AND NOT e.archived AND e.updated_at = %s"""


# --- SQLite ---


@functools.cache
def sqlite_insert_sql(*, rows: int) -> str:
    """The records of one statement as a multi-row INSERT; returns (id, idempotency_key) of each stored row."""
    one_row = "(" + ", ".join(["%s"] * len(RECORD_COLUMNS)) + ")"
    return (
        f"INSERT INTO {UsageRecord._meta.db_table} ({', '.join(c.quoted for c in RECORD_COLUMNS)}) "
        f"VALUES {', '.join([one_row] * rows)} {_CONFLICT} RETURNING id, idempotency_key"
    )


def sqlite_insert_params(write: RecordsWrite, *, adapt: Any) -> list[Any]:
    """The parameters of sqlite_insert_sql, row by row; `adapt` turns a datetime into the stored text."""
    values = _column_values(write)
    params: list[Any] = []
    for index in range(len(write.rows)):
        for column in RECORD_COLUMNS:
            value = values[column.name][index] if column.per_record else values[column.name]
            params.append(adapt(value) if isinstance(value, dt.datetime) else value)
    return params
