from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, connections
from django.db.models.signals import post_migrate
from rest_framework.test import APIClient

from tests.factories import ApiKeyBundle, api_key_make, organisation_make, usage_event_make
from zenskar_site.accounts.models import Organisation

IS_POSTGRES = bool(os.environ.get("DATABASE_URL"))


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL: runs in the PostgreSQL pass of `make test`")
    for item in items:
        if not IS_POSTGRES and ("postgres" in item.keywords or "celery_worker" in item.keywords):
            item.add_marker(skip_pg)


@pytest.fixture(autouse=True)
def _sqlite_audit_rows_removed_before_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """Let a transactional test's teardown flush empty the trigger-guarded tables on SQLite.

    Migration 0002 guards the audit table with BEFORE DELETE triggers. SQLite's flush uses DELETE, which
    they abort (PostgreSQL's flush uses TRUNCATE, refused by 0003: see the fixture below). Before that flush (this
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


def _is_transactional(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("django_db")
    return (
        "transactional_db" in request.fixturenames
        or "live_server" in request.fixturenames
        or bool(marker and marker.kwargs.get("transaction"))
    )


# Databases (aliases) whose audit TRUNCATE trigger is disabled for the flush under way.
_AUDIT_TRUNCATE_DISABLED: set[str] = set()


def _audit_truncate_trigger_set(alias: str, *, enabled: bool) -> None:
    migration = importlib.import_module("zenskar_site.accounts.migrations.0003_audit_no_truncate")
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_trigger WHERE tgname = %s", [migration.TRIGGER])
        if cursor.fetchone() is None:  # not migrated (a test that migrated backwards failed): nothing to do
            return
        cursor.execute(
            f"ALTER TABLE {migration.TABLE} {'ENABLE' if enabled else 'DISABLE'} TRIGGER {migration.TRIGGER}"
        )


def _audit_truncate_trigger_enabled_after_flush(*, using: str, **kwargs: Any) -> None:
    """The flush ends by sending post_migrate (pytest-django sets no available_apps, so it is not inhibited)."""
    if using in _AUDIT_TRUNCATE_DISABLED:
        _AUDIT_TRUNCATE_DISABLED.discard(using)
        _audit_truncate_trigger_set(using, enabled=True)


post_migrate.connect(_audit_truncate_trigger_enabled_after_flush, dispatch_uid="tests-audit-truncate-after-flush")


@pytest.fixture(autouse=True)
def _postgres_audit_truncate_allowed_for_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """Let a transactional test's teardown flush empty the audit table on PostgreSQL.

    Migration 0003 refuses TRUNCATE on the audit table; PostgreSQL's flush truncates every table. Before
    that flush (this fixture depends on transactional_db, so it is torn down first) the one trigger is
    disabled, and the flush's closing post_migrate signal enables it again, so no test runs without it.
    """
    if not IS_POSTGRES or not _is_transactional(request):
        yield
        return
    request.getfixturevalue("transactional_db")
    for alias in list(_AUDIT_TRUNCATE_DISABLED):  # a flush that failed before its post_migrate
        _AUDIT_TRUNCATE_DISABLED.discard(alias)
        _audit_truncate_trigger_set(alias, enabled=True)
    yield
    _audit_truncate_trigger_set(connection.alias, enabled=False)
    _AUDIT_TRUNCATE_DISABLED.add(connection.alias)


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
