from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from rest_framework.test import APIClient

from tests.factories import ApiKeyBundle
from zenskar_site.accounts.models import AuditEntry


def test_changes_made_with_an_api_key_are_audited_with_that_key(api: APIClient, full_key: ApiKeyBundle) -> None:
    api.post(
        "/api/v1/usage-events/",
        {"name": "Seats", "api_slug": "seats", "dataschema": {"data": {"seats": "Int64"}}},
        format="json",
    )

    entries = api.get("/api/v1/audit/", {"object_type": "usage_event"}).json()["results"]

    assert len(entries) == 1
    assert entries[0]["actor"] == f"api_key:{full_key.api_key.prefix}"
    assert entries[0]["action"] == "usage_event.create"
    assert entries[0]["after"]["dataschema"]["data"] == {"seats": "Int64"}


def test_audit_entries_cannot_be_changed_or_deleted(api: APIClient) -> None:
    api.post("/api/v1/api-keys/", {"name": "k", "scope": "ingest"}, format="json")
    entry = AuditEntry.objects.filter(action="api_key.create").latest("id")

    entry.reason = "tampered"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).update(reason="tampered")
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).delete()
    assert AuditEntry.objects.get(pk=entry.pk).reason == ""


def test_the_database_itself_refuses_to_change_or_delete_audit_entries(api: APIClient) -> None:
    api.post("/api/v1/api-keys/", {"name": "k", "scope": "ingest"}, format="json")
    entry = AuditEntry.objects.filter(action="api_key.create").latest("id")
    table = AuditEntry._meta.db_table

    for statement in (f"UPDATE {table} SET reason = 'x' WHERE id = %s", f"DELETE FROM {table} WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement, [entry.pk])
    assert AuditEntry.objects.get(pk=entry.pk).reason == ""


@pytest.mark.postgres
# Transactional: inside the test's transaction PostgreSQL refuses the TRUNCATE for another reason (the
# insert's pending foreign-key checks). Running after other transactional tests' flushes, this also shows
# that the flush turns the guard off for itself only.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "statement",
    [
        pytest.param("TRUNCATE zenskar_site_auditentry", id="the-table"),
        pytest.param("TRUNCATE zenskar_site_auditentry RESTART IDENTITY", id="restart-identity"),
        pytest.param("TRUNCATE zenskar_site_organisation CASCADE", id="cascade-from-organisations"),
    ],
)
def test_the_database_refuses_to_truncate_the_audit_trail(api: APIClient, statement: str) -> None:
    """TRUNCATE fires no row trigger: 0003's statement trigger is what keeps it from emptying the table."""
    api.post("/api/v1/api-keys/", {"name": "k", "scope": "ingest"}, format="json")
    count = AuditEntry.objects.count()
    assert count >= 1

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)

    assert AuditEntry.objects.count() == count
