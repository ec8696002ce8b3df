"""Corrections in a real browser (SPEC §6): an admin edits a record in the Django admin and the
metric's value changes on the dashboard."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from metrics.definitions import metric_create
from metrics.models import MetricValue
from tests.factories import organisation_make, usage_event_make
from usage.models import UsageRecord
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import AuditEntry

pytestmark = pytest.mark.browser
EMAIL, PASSWORD = "ops@example.com", "correct-horse-battery"


def test_an_admin_edit_of_a_record_changes_the_metric_value_on_the_dashboard(
    page: Page, live_server: Any, screenshot: Callable[[str], Path], transactional_db: None
) -> None:
    organisation = organisation_make(name="Corrections Org", admin_email=EMAIL, password=PASSWORD)
    usage_event = usage_event_make(organisation=organisation)
    moment = (timezone.now() - dt.timedelta(hours=3)).replace(minute=10, second=0, microsecond=0)
    record = UsageRecord.objects.create(
        usage_event=usage_event,
        customer_id="cus_acme",
        timestamp=moment,
        data={"cpu_usage_hours": 5.0},
        content_hash="x",
        received_at=moment,
    )
    metric = metric_create(
        actor=system_actor(organisation=organisation),
        body={
            "name": "CPU hours",
            "slug": "cpu",
            "usage_event": "compute_hours",
            "aggregation": "sum",
            "field": "cpu_usage_hours",
            "granularity": "day",
        },
    )
    from metrics.engine.refresh import metric_recompute

    metric_recompute(metric_id=metric.id, version=metric.version)

    page.goto(live_server.url + "/admin/login/?next=/admin/usage/usagerecord/")
    page.locator("#id_username").fill(EMAIL)
    page.locator("#id_password").fill(PASSWORD)
    page.locator("input[type=submit]").click()
    expect(page.locator("#result_list")).to_contain_text("cus_acme")
    screenshot("corrections_01_admin_records")
    page.locator("#result_list a", has_text=str(record.id)).first.click()
    page.locator("textarea[name=data]").fill(json.dumps({"cpu_usage_hours": 8}))
    page.locator("input[name=reason]").fill("Meter misread on the invoice")
    screenshot("corrections_02_admin_edit")
    page.locator("input[name=_save]").click()
    expect(page.locator(".messagelist")).to_contain_text("changed successfully")

    record.refresh_from_db()
    assert record.data == {"cpu_usage_hours": 8}
    assert AuditEntry.objects.get(action="record.update").reason == "Meter misread on the invoice"
    # SQLite run: Celery is eager, so the refresh ran right after the edit's commit.
    assert MetricValue.objects.get(metric=metric).value == "8"

    page.goto(live_server.url + "/login/")
    page.goto(live_server.url + "/metrics/cpu/")
    row = page.locator("#values-table tbody tr", has_text="cus_acme")
    expect(row.locator("td.effective")).to_have_text("8")
    screenshot("corrections_03_dashboard_value")

    page.goto(live_server.url + f"/usage-events/compute_hours/records/{record.id}/")
    expect(page.locator("#record-audit")).to_contain_text("record.update")
    expect(page.locator("#record-audit")).to_contain_text("Meter misread on the invoice")
    screenshot("corrections_04_record_audit")
