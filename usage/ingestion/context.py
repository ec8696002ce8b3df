"""Who is writing to which usage event: the API key and the usage event of an ingestion request.

One query finds both (the key by its prefix, the usage event by its slug in the key's organisation);
the key is then checked by accounts' one `api_key_check`. On PostgreSQL the context is cached per
process, and the write statement re-checks in the database that the key is still active and the
usage event unchanged, so revocation, archiving and schema changes take effect at once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from usage.models import UsageEvent, UsageEventKind
from zenskar_site.accounts.models import ApiKey, ApiKeyScope
from zenskar_site.accounts.services import api_key_check, api_key_split
from zenskar_site.lib.errors import DomainError, NotFound, Unauthenticated
from zenskar_site.lib.sql import hot_rows, on_postgres


class IngestError(DomainError):
    """A whole-request failure: maps to the status code SPEC §3 names for it."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.headers = headers or {}


@dataclass
class IngestContext:
    api_key: ApiKey
    usage_event: UsageEvent
    # Set when the context came from this process's cache: the write statement then re-checks, in the
    # database, that the key is still active and the definition unchanged.
    cached: bool = False


class StaleContext(Exception):
    """The cached key or usage event changed since it was cached; nothing was written."""


# (key prefix, api slug) -> context. Authentication still hashes the presented secret on every
# request; revocation, archiving and schema changes are caught by the guard in the write statement.
_context_cache: dict[tuple[str, str], IngestContext] = {}
CONTEXT_CACHE_SIZE = 1024


def ingest_context_forget(*, api_key_prefix: str, api_slug: str) -> None:
    _context_cache.pop((api_key_prefix, api_slug), None)


def ingest_context_cached(
    *, secret: str | None, api_slug: str, organisation_header: str | None
) -> IngestContext | None:
    """The cached context for this key and slug when the secret matches it (PostgreSQL only)."""
    if not secret or not on_postgres():
        return None
    context = _context_cache.get((api_key_split(secret=secret) or "", api_slug))
    if context is None or context.usage_event.kind != UsageEventKind.EVENT:
        return None  # aggregates are written in a transaction that reads the current rows anyway
    # Prefixes are unique and a key's hash never changes, so a secret that fails here fails in the database too.
    api_key_check(api_key=context.api_key, secret=secret, organisation_header=organisation_header)
    return context


def ingest_context_internal(*, usage_event: UsageEvent, label: str) -> IngestContext:
    """A context for trusted internal writers (CSV import): full scope, `label` in the error log."""
    return IngestContext(
        api_key=ApiKey(organisation_id=usage_event.organisation_id, prefix=label[:16], scope=ApiKeyScope.FULL),
        usage_event=usage_event,
    )


_CONTEXT_SQL = f"""
SELECT k.id, k.organisation_id, k.key_hash, k.scope, k.revoked_at, k.last_used_at,
       e.id, e.kind, e.aggregate_period, e.dataschema, e.archived, e.updated_at
FROM {ApiKey._meta.db_table} k
LEFT JOIN {UsageEvent._meta.db_table} e ON e.organisation_id = k.organisation_id AND e.api_slug = %s
WHERE k.prefix = %s
"""


def _as_datetime(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    parsed = dt.datetime.fromisoformat(str(value))  # SQLite stores UTC as naive text
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def ingest_context_load(*, secret: str | None, api_slug: str, organisation_header: str | None) -> IngestContext:
    """Authenticate the key and find the active usage event, or raise the 401/403/404 answer."""
    if not secret:
        raise Unauthenticated("Send an API key in the x-api-key header (or Authorization: Bearer).")
    prefix = api_key_split(secret=secret)
    row = None
    if prefix is not None:
        found = hot_rows(_CONTEXT_SQL, [api_slug, prefix])
        row = found[0] if found else None
    api_key = None
    if prefix is not None and row is not None:
        api_key = ApiKey(
            id=row[0],
            organisation_id=row[1] if isinstance(row[1], uuid.UUID) else uuid.UUID(str(row[1])),
            prefix=prefix,
            key_hash=row[2],
            scope=row[3],
            revoked_at=_as_datetime(row[4]),
            last_used_at=_as_datetime(row[5]),
        )
    api_key = api_key_check(api_key=api_key, secret=secret, organisation_header=organisation_header)
    if row is None or row[6] is None or row[10]:
        raise NotFound(f"No active usage event with API slug {api_slug!r} in this organisation.")
    usage_event = UsageEvent(
        id=row[6],
        organisation_id=api_key.organisation_id,
        api_slug=api_slug,
        kind=row[7],
        aggregate_period=row[8],
        dataschema=row[9] if isinstance(row[9], dict) else orjson.loads(row[9]),
        archived=False,
        updated_at=_as_datetime(row[11]) or dt.datetime.min.replace(tzinfo=dt.UTC),
    )
    if on_postgres() and prefix is not None:
        if len(_context_cache) >= CONTEXT_CACHE_SIZE:
            _context_cache.clear()
        _context_cache[(prefix, api_slug)] = IngestContext(api_key=api_key, usage_event=usage_event, cached=True)
    return IngestContext(api_key=api_key, usage_event=usage_event)
