"""The Django admin: scoped to the organisation admin's own data; corrections go through the services."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from metrics.definitions import metric_create
from metrics.engine.refresh import metric_values_refresh
from metrics.models import MetricValue
from tests.factories import organisation_admin, usage_event_make
from usage.models import UsageRecord
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import AuditEntry, Membership, Organisation

MOMENT = (timezone.now() - dt.timedelta(days=2)).replace(hour=9, minute=0, second=0, microsecond=0)


def seed(organisation: Organisation, customer: str, hours: float) -> UsageRecord:
    usage_event = (
        usage_event_make(organisation=organisation)
        if not organisation.usage_events.exists()
        else organisation.usage_events.get()
    )
    return UsageRecord.objects.create(
        usage_event=usage_event,
        customer_id=customer,
        timestamp=MOMENT,
        data={"cpu_usage_hours": hours},
        content_hash="x",
        received_at=MOMENT,
    )


def admin_client(organisation: Organisation) -> Client:
    client = Client()
    client.force_login(organisation_admin(organisation))
    return client


def test_an_organisation_admin_sees_only_their_own_records(
    organisation: Organisation, other_organisation: Organisation
) -> None:
    mine = seed(organisation, "mine", 1)
    theirs = seed(other_organisation, "theirs", 2)
    client = admin_client(organisation)

    listing = client.get("/admin/usage/usagerecord/")
    foreign = client.get(f"/admin/usage/usagerecord/{theirs.id}/change/")

    assert listing.status_code == 200
    assert "mine" in listing.content.decode()
    assert "theirs" not in listing.content.decode()
    assert foreign.status_code in (302, 403, 404)
    assert client.get(f"/admin/usage/usagerecord/{mine.id}/change/").status_code == 200


def test_a_superuser_sees_every_organisation(organisation: Organisation, other_organisation: Organisation) -> None:
    seed(organisation, "mine", 1)
    seed(other_organisation, "theirs", 2)
    client = Client()
    client.force_login(User.objects.create_superuser("root@example.com", "root@example.com", "pw-123456"))
    content = client.get("/admin/usage/usagerecord/").content.decode()
    assert "mine" in content
    assert "theirs" in content


def test_an_admin_edit_is_validated_audited_and_recomputed(
    organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    record = seed(organisation, "a", 5)
    with django_capture_on_commit_callbacks(execute=True):
        metric_create(
            actor=system_actor(organisation=organisation),
            body={
                "name": "CPU",
                "slug": "cpu",
                "usage_event": "compute_hours",
                "aggregation": "sum",
                "field": "cpu_usage_hours",
                "granularity": "day",
            },
        )
    client = admin_client(organisation)
    url = f"/admin/usage/usagerecord/{record.id}/change/"
    form = {
        "customer_id": "a",
        "timestamp_0": MOMENT.strftime("%Y-%m-%d"),
        "timestamp_1": MOMENT.strftime("%H:%M:%S"),
        "reason": "meter misread",
    }

    bad = client.post(url, {**form, "data": json.dumps({"cpu_usage_hours": "lots"})})
    good = client.post(url, {**form, "data": json.dumps({"cpu_usage_hours": 8})})
    metric_values_refresh(usage_event_id=record.usage_event_id)

    assert bad.status_code == 200
    assert "Expected Float64" in bad.content.decode()
    assert good.status_code == 302
    record.refresh_from_db()
    assert record.data == {"cpu_usage_hours": 8}
    entry = AuditEntry.objects.get(action="record.update")
    assert entry.actor == f"user:{organisation_admin(organisation).username}"
    assert entry.reason == "meter misread"
    assert MetricValue.objects.get().value == "8"


def test_admin_actions_void_and_restore(organisation: Organisation) -> None:
    record = seed(organisation, "a", 5)
    client = admin_client(organisation)
    client.post("/admin/usage/usagerecord/", {"action": "void_selected", "_selected_action": [record.id]})
    record.refresh_from_db()
    assert record.voided is True
    client.post("/admin/usage/usagerecord/", {"action": "restore_selected", "_selected_action": [record.id]})
    record.refresh_from_db()
    assert record.voided is False
    assert [e.action for e in AuditEntry.objects.order_by("id") if e.object_type == "usage_record"] == [
        "record.void",
        "record.restore",
    ]


def test_a_viewer_cannot_change_anything(organisation: Organisation, django_user_model: Any) -> None:
    record = seed(organisation, "a", 5)
    viewer = django_user_model.objects.create_user(username="viewer@acme.test", password="pw-123456", is_staff=True)
    Membership.objects.create(user=viewer, organisation=organisation, role="viewer")
    client = Client()
    client.force_login(viewer)

    view = client.get(f"/admin/usage/usagerecord/{record.id}/change/")
    client.post("/admin/usage/usagerecord/", {"action": "void_selected", "_selected_action": [record.id]})
    client.post(f"/admin/usage/usagerecord/{record.id}/change/", {"customer_id": "z", "data": "{}"})

    assert view.status_code == 200
    assert 'name="customer_id"' not in view.content.decode()  # read-only for a viewer
    record.refresh_from_db()
    assert (record.voided, record.customer_id) == (False, "a")


def test_nobody_can_change_or_delete_audit_entries_in_the_admin(organisation: Organisation) -> None:
    seed(organisation, "a", 5)
    client = Client()
    client.force_login(User.objects.create_superuser("root@example.com", "root@example.com", "pw-123456"))
    entry = AuditEntry.objects.create(
        organisation=organisation, actor="system", action="x", object_type="y", object_id="1"
    )

    assert client.get("/admin/zenskar_site/auditentry/").status_code == 200
    assert client.post(f"/admin/zenskar_site/auditentry/{entry.id}/delete/", {"post": "yes"}).status_code == 403
    client.post(f"/admin/zenskar_site/auditentry/{entry.id}/change/", {"reason": "tampered"})
    entry.refresh_from_db()
    assert entry.reason == ""
    assert client.get("/admin/zenskar_site/auditentry/add/").status_code == 403


def test_metric_value_override_in_the_admin(
    organisation: Organisation, django_capture_on_commit_callbacks: Any
) -> None:
    seed(organisation, "a", 5)
    with django_capture_on_commit_callbacks(execute=True):
        metric_create(
            actor=system_actor(organisation=organisation),
            body={
                "name": "CPU",
                "slug": "cpu",
                "usage_event": "compute_hours",
                "aggregation": "sum",
                "field": "cpu_usage_hours",
                "granularity": "day",
            },
        )
    value = MetricValue.objects.get()
    client = admin_client(organisation)

    response = client.post(
        f"/admin/metrics/metricvalue/{value.id}/change/", {"override_value": "3", "reason": "goodwill"}
    )

    assert response.status_code == 302
    value.refresh_from_db()
    assert (value.computed_value, value.override_value, value.value) == ("5", "3", "3")
    assert AuditEntry.objects.get(action="metric_value.override").reason == "goodwill"
