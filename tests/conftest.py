from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.test import TransactionTestCase
from django.test.utils import override_settings
from rest_framework.test import APIClient

from tests.factories import ApiKeyBundle, api_key_make, organisation_make, usage_event_make
from zenskar_site.accounts.models import Organisation

IS_POSTGRES = bool(os.environ.get("DATABASE_URL"))


def pytest_configure(config: Any) -> None:
    """One-iteration PBKDF2 in the test process (tests/hashers.py): the real 1,000,000 cost most of the suite's time."""
    override_settings(
        PASSWORD_HASHERS=["tests.hashers.FastPBKDF2PasswordHasher", "django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    ).enable()


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL: runs in the PostgreSQL pass of `make test`")
    for item in items:
        if not IS_POSTGRES and ("postgres" in item.keywords or "celery_worker" in item.keywords):
            item.add_marker(skip_pg)


@pytest.fixture(autouse=True)
def _sqlite_audit_rows_removed_before_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """Let a transactional test's teardown flush empty the trigger-guarded tables on SQLite.

    Migration 0002 guards the audit table with BEFORE DELETE triggers. SQLite's flush uses DELETE, which
    they abort (PostgreSQL's flush uses TRUNCATE, refused by 0003: see _fixture_teardown below). Before that flush (this
    fixture depends on transactional_db, so it is torn down first) the triggers are dropped, the rows
    deleted and the triggers re-created with the migration's own SQL.
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = (
        "transactional_db" in request.fixturenames
        or "live_server" in request.fixturenames
        or bool(marker and marker.kwargs.get("transaction"))
    )
    if not transactional or IS_POSTGRES:
        yield
        return
    request.getfixturevalue("transactional_db")
    yield
    migration = importlib.import_module("zenskar_site.accounts.migrations.0002_audit_append_only_triggers")
    with connection.cursor() as cursor:
        for statement in migration.SQLITE_DOWN:
            cursor.execute(statement)
        cursor.execute(f"DELETE FROM {migration.TABLE}")
        for statement in migration.SQLITE_UP:
            cursor.execute(statement)
        # usage/migrations/0005 refuses to delete a usage event that still has records; the flush
        # deletes tables in no set order, so the records go first.
        cursor.execute("DELETE FROM usage_usagerecord")
        # billing/migrations/0003 refuses to delete approved invoices, their lines and credit notes: the
        # same, with its own SQL.
        frozen = importlib.import_module("billing.migrations.0003_invoices_frozen")
        for statement in frozen.SQLITE_DOWN:
            cursor.execute(statement)
        for table in ("paymentpart", "payment", "creditnote", "invoiceline", "invoice"):
            cursor.execute(f"DELETE FROM billing_{table}")
        for statement in frozen.SQLITE_UP:
            cursor.execute(statement)


def _audit_truncate_trigger_set(alias: str, *, enabled: bool) -> None:
    migration = importlib.import_module("zenskar_site.accounts.migrations.0003_audit_no_truncate")
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_trigger WHERE tgname = %s", [migration.TRIGGER])
        if cursor.fetchone() is None:  # not migrated (a test that migrated backwards failed): nothing to do
            return
        cursor.execute(
            f"ALTER TABLE {migration.TABLE} {'ENABLE' if enabled else 'DISABLE'} TRIGGER {migration.TRIGGER}"
        )


# Kept by the fast cleanup: they hold only what migrate (post_migrate) creates, and no test changes them.
_KEPT_TABLES = frozenset({"django_content_type", "auth_permission"})


def _postgres_rows_deleted(alias: str) -> bool:
    """Empty every Django table of the database in one transaction; False when PostgreSQL refused.

    DELETE of a few rows is much cheaper than the flush's TRUNCATE of every table (a new file per table and
    index) followed by post_migrate re-creating every content type and permission. `session_replication_role
    = replica` (superuser only) skips the triggers for this transaction only: the foreign keys (so the order
    does not matter), the audit trail's append-only guard, the frozen invoices' guard, usage_event_keep_records.
    """
    conn = connections[alias]
    tables = [
        table
        for table in conn.introspection.django_table_names(only_existing=True, include_views=False)
        if table not in _KEPT_TABLES
    ]
    try:
        with transaction.atomic(using=alias), conn.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
            cursor.execute("; ".join(f"DELETE FROM {conn.ops.quote_name(table)}" for table in tables))
    except DatabaseError:
        return False
    return True


# Private Django API (django/test/testcases.py), hence getattr/setattr: the flush after a transactional test.
_flush_fixture_teardown: Callable[[TransactionTestCase], None] = getattr(TransactionTestCase, "_fixture_teardown")  # noqa: B009


def _fixture_teardown(self: Any) -> None:
    """A transactional test's cleanup on PostgreSQL: every row deleted, else Django's flush.

    Django's flush TRUNCATEs, which migration 0003 refuses on the audit table: for the flush, that one trigger
    is disabled and enabled again right after, so no test runs without it.
    """
    aliases = list(self._databases_names(include_mirrors=False))
    if not IS_POSTGRES or any(connections[alias].vendor != "postgresql" for alias in aliases):
        _flush_fixture_teardown(self)
        return
    if (
        self.available_apps is None
        and not self.serialized_rollback
        and all(_postgres_rows_deleted(alias) for alias in aliases)
    ):
        return
    for alias in aliases:
        _audit_truncate_trigger_set(alias, enabled=False)
    try:
        _flush_fixture_teardown(self)
    finally:
        for alias in aliases:
            _audit_truncate_trigger_set(alias, enabled=True)


setattr(TransactionTestCase, "_fixture_teardown", _fixture_teardown)  # noqa: B010


@pytest.fixture
def organisation(db: None) -> Organisation:
    return organisation_make(name="Acme")


@pytest.fixture
def other_organisation(db: None) -> Organisation:
    return organisation_make(name="Globex")


@pytest.fixture
def full_key(organisation: Organisation) -> ApiKeyBundle:
    return api_key_make(organisation=organisation, scope="full")


@pytest.fixture
def ingest_key(organisation: Organisation) -> ApiKeyBundle:
    return api_key_make(organisation=organisation, scope="ingest")


@pytest.fixture
def client_for() -> Callable[..., APIClient]:
    def make(secret: str | None, **headers: str) -> APIClient:
        client = APIClient()
        extra = {f"HTTP_{name.upper()}": value for name, value in headers.items()}
        if secret is not None:
            extra["HTTP_X_API_KEY"] = secret
        client.credentials(**extra)
        return client

    return make


@pytest.fixture
def api(full_key: ApiKeyBundle, client_for: Callable[..., APIClient]) -> APIClient:
    """A management-API client authenticated with a `full` key of `organisation`."""
    return client_for(full_key.secret)


@pytest.fixture
def compute_hours(organisation: Organisation) -> Any:
    return usage_event_make(organisation=organisation)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"
