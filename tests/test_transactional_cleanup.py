"""The cleanup after a transactional test (tests/conftest.py `_fixture_teardown`) leaves nothing behind.

The first test commits rows in the trigger-guarded tables; the second, run after it, finds every table empty
and the guards still on. pytest runs a module's tests in order.
"""

from __future__ import annotations

import json

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import usage_event_make
from usage.models import UsageRecord
from zenskar_site.accounts.models import AuditEntry, Organisation

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

_KEPT = {"django_content_type", "auth_permission"}


def _tables_with_rows() -> list[str]:
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.django_table_names(only_existing=True, include_views=False):
            if table in _KEPT:
                continue
            cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {connection.ops.quote_name(table)})")
            if cursor.fetchone()[0]:
                found.append(table)
    return found


def test_a_transactional_test_commits_rows_in_guarded_tables(api: APIClient, organisation: Organisation) -> None:
    api.post("/api/v1/api-keys/", {"name": "k", "scope": "ingest"}, format="json")
    usage_event_make(organisation=organisation)
    record = {"customer_id": "cus_1", "timestamp": timezone.now().isoformat(), "data": {"cpu_usage_hours": 5}}
    response = api.post("/usage/compute_hours", data=json.dumps(record), content_type="application/json")
    assert response.status_code == 202, response.content
    assert AuditEntry.objects.exists()
    # the audit trail (append-only), a usage event with records (usage_event_keep_records): DELETE is refused
    assert {"zenskar_site_auditentry", "usage_usageevent", "usage_usagerecord"} <= set(_tables_with_rows())


def test_the_next_test_finds_every_table_empty_and_the_guards_on() -> None:
    assert _tables_with_rows() == []
    assert UsageRecord.objects.count() == 0
    with connection.cursor() as cursor:
        cursor.execute("SHOW session_replication_role")
        assert cursor.fetchone()[0] == "origin"
        cursor.execute("SELECT count(*) FROM django_content_type")
        assert cursor.fetchone()[0] > 0
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE zenskar_site_auditentry")
