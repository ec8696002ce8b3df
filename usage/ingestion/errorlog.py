"""The ingestion error log: rejected items kept with their reasons, so a user can see why a record was not counted.

A rejected item is kept as it came, with characters the database cannot store shown as U+FFFD (the log
is for reading) and cut to ERROR_PAYLOAD_MAX_CHARS.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson

from usage.models import IngestionError
from zenskar_site.lib.text import storable

ERROR_PAYLOAD_MAX_CHARS = 4096


def error_rows(errors_to_log: list[tuple[Any, dict[str, list[str]]]]) -> list[tuple[str, bool, str]]:
    """(payload JSON, truncated, errors JSON) of each rejected item, for the PostgreSQL write statement."""
    rows = []
    for payload, errors in errors_to_log:
        stored, truncated = _error_payload(payload)
        rows.append((orjson.dumps(stored, default=str).decode(), truncated, orjson.dumps(errors).decode()))
    return rows


def _error_payload(item: Any) -> tuple[Any, bool]:
    """A rejected item as the error log keeps it: characters the database cannot store shown as U+FFFD
    (the log is for reading), and cut to ERROR_PAYLOAD_MAX_CHARS."""
    item = storable(item)
    text = orjson.dumps(item, default=str).decode()
    if len(text) <= ERROR_PAYLOAD_MAX_CHARS:
        return item if not _has_decimal(item) else orjson.loads(text), False
    return text[:ERROR_PAYLOAD_MAX_CHARS], True


def _has_decimal(item: Any) -> bool:
    if isinstance(item, Decimal):
        return True
    if isinstance(item, dict):
        return any(_has_decimal(v) for v in item.values())
    if isinstance(item, list):
        return any(_has_decimal(v) for v in item)
    return False


def errors_log(
    *, usage_event_id: int, errors_to_log: list[tuple[Any, dict[str, list[str]]]], now: dt.datetime, api_key_prefix: str
) -> None:
    """Keep rejected items in the error log through the ORM (SQLite, and keys found taken after the write)."""
    log = []
    for payload, errors in errors_to_log:
        stored, truncated = _error_payload(payload)
        log.append(
            IngestionError(
                usage_event_id=usage_event_id,
                received_at=now,
                payload=stored,
                payload_truncated=truncated,
                errors=errors,
                api_key_prefix=api_key_prefix,
            )
        )
    IngestionError.objects.bulk_create(log)
