"""An existing installation upgrades across the layers change with every row intact.

The change moved the organisations/API keys/audit app to `zenskar_site/accounts/` (label `zenskar_site`
kept, so its tables and migration history stay) and `DirtyBucket` from `metrics` to `usage` (state only:
usage/migrations/0007 and metrics/migrations/0004; its table `metrics_dirtybucket` stays).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.apps import apps as current_apps
from django.apps.registry import Apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Model

from metrics.models import BillableMetric, MetricValue
from usage.models import DirtyBucket, UsageEvent, UsageRecord
from zenskar_site.accounts.models import AuditEntry, Organisation

# The leaf migrations of the project's apps before the change.
BEFORE_THE_CHANGE = [
    ("zenskar_site", "0002_audit_append_only_triggers"),
    ("usage", "0006_csv_import_progress_at"),
    ("metrics", "0003_no_fk_constraint_on_hot_tables"),
]
PROJECT_APP_LABELS = ("zenskar_site", "usage", "metrics")
AT = dt.datetime(2026, 3, 2, 9, 30, tzinfo=dt.UTC)
HOUR = dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC)


def migrate(targets: list[tuple[str, str]]) -> None:
    MigrationExecutor(connection).migrate(targets)


def migrate_to_latest() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def plain(value: Any) -> Any:
    # A BinaryField reads back as memoryview on PostgreSQL and bytes on SQLite.
    return bytes(value) if isinstance(value, memoryview) else value


def row_of(instance: Model) -> dict[str, Any]:
    """Every column of a stored row, as the database returns it (defaults filled in by it included)."""
    instance.refresh_from_db()
    return {field.attname: plain(getattr(instance, field.attname)) for field in instance._meta.concrete_fields}


def rows_written_before_the_change(old: Apps) -> list[tuple[type[Model], dict[str, Any]]]:
    """One row in every table of the project's apps, through the historical models; each with its current model."""
    user = old.get_model("auth", "User").objects.create(username="ada", email="ada@acme.test", password="!")
    organisation = old.get_model("zenskar_site", "Organisation").objects.create(name="Acme")
    membership = old.get_model("zenskar_site", "Membership").objects.create(
        user=user, organisation=organisation, role="admin"
    )
    api_key = old.get_model("zenskar_site", "ApiKey").objects.create(
        organisation=organisation,
        name="ingest from the edge",
        prefix="zk_0123456789ab",
        key_hash="a" * 64,
        scope="full",
        created_by=user,
        last_used_at=AT,
    )
    audit_entry = old.get_model("zenskar_site", "AuditEntry").objects.create(
        organisation=organisation,
        actor_user=user,
        actor_api_key=api_key,
        actor="ada@acme.test",
        action="usage_event.create",
        object_type="usage_event",
        object_id="1",
        after={"api_slug": "compute_hours"},
        reason="first event",
    )
    usage_event = old.get_model("usage", "UsageEvent").objects.create(
        organisation=organisation,
        name="Compute hours",
        api_slug="compute_hours",
        kind="event",
        dataschema={"cpu_usage_hours": "number", "region": "string"},
    )
    record = old.get_model("usage", "UsageRecord").objects.create(
        usage_event=usage_event,
        customer_id="cus_123",
        timestamp=AT,
        data={"cpu_usage_hours": 5, "region": "eu"},
        idempotency_key="req-1",
        content_hash="b" * 64,
        received_at=AT,
    )
    voided_record = old.get_model("usage", "UsageRecord").objects.create(
        usage_event=usage_event,
        customer_id="cus_456",
        timestamp=AT,
        data={"cpu_usage_hours": 1.25, "region": "us"},
        content_hash="c" * 64,
        received_at=AT,
        voided=True,
    )
    ingestion_error = old.get_model("usage", "IngestionError").objects.create(
        usage_event=usage_event,
        received_at=AT,
        payload={"customer_id": "cus_123"},
        errors={"timestamp": ["This field is required."]},
        api_key_prefix=api_key.prefix,
    )
    csv_import = old.get_model("usage", "CsvImport").objects.create(
        organisation=organisation,
        usage_event=usage_event,
        created_by=user,
        filename="march.csv",
        content=b"customer_id,timestamp,cpu_usage_hours\ncus_123,2026-03-02T09:30:00Z,5\n",
        columns=["customer_id", "timestamp", "cpu_usage_hours"],
        mapping={"customer_id": "customer_id", "timestamp": "timestamp", "cpu_usage_hours": "data.cpu_usage_hours"},
        sample=[["cus_123", "2026-03-02T09:30:00Z", "5"]],
        status="importing",
        rows_total=1,
        progress_at=AT,
    )
    metric = old.get_model("metrics", "BillableMetric").objects.create(
        organisation=organisation,
        name="CPU hours",
        slug="cpu_hours",
        kind="builder",
        usage_event=usage_event,
        aggregation="sum",
        field="cpu_usage_hours",
        group_by=["region"],
        granularity="hour",
        version=2,
    )
    metric.sources.add(usage_event)
    source = old.get_model("metrics", "BillableMetric").sources.through.objects.get()
    metric_value = old.get_model("metrics", "MetricValue").objects.create(
        metric=metric,
        customer_id="cus_123",
        period_start=HOUR,
        period_end=HOUR + dt.timedelta(hours=1),
        dimension={"region": "eu"},
        dimension_key="region=eu",
        computed_value="5",
        override_value="4.5",
        override_reason="credit for an outage",
        metric_version=2,
    )
    dirty_bucket = old.get_model("metrics", "DirtyBucket").objects.create(usage_event=usage_event, hour_start=HOUR)

    accounts, usage, metrics = (current_apps.get_app_config(label) for label in PROJECT_APP_LABELS)
    return [
        (accounts.get_model("Organisation"), row_of(organisation)),
        (accounts.get_model("Membership"), row_of(membership)),
        (accounts.get_model("ApiKey"), row_of(api_key)),
        (accounts.get_model("AuditEntry"), row_of(audit_entry)),
        (usage.get_model("UsageEvent"), row_of(usage_event)),
        (usage.get_model("UsageRecord"), row_of(record)),
        (usage.get_model("UsageRecord"), row_of(voided_record)),
        (usage.get_model("IngestionError"), row_of(ingestion_error)),
        (usage.get_model("CsvImport"), row_of(csv_import)),
        (metrics.get_model("BillableMetric"), row_of(metric)),
        (BillableMetric.sources.through, row_of(source)),
        (metrics.get_model("MetricValue"), row_of(metric_value)),
        (DirtyBucket, row_of(dirty_bucket)),
    ]


@pytest.mark.django_db(transaction=True)
def test_rows_written_before_the_layers_change_are_read_through_the_current_models() -> None:
    try:
        # Given an installation at the schema before the change, with a row in every table
        migrate(BEFORE_THE_CHANGE)
        loader = MigrationExecutor(connection).loader
        assert ("usage", "0007_dirtybucket_moved_from_metrics") not in loader.applied_migrations
        old = loader.project_state(BEFORE_THE_CHANGE).apps
        assert "dirtybucket" in old.all_models["metrics"]
        written = rows_written_before_the_change(old)

        # When it upgrades
        migrate_to_latest()

        # Then every row reads back through the current models, every column as it was
        for model, row in written:
            assert plain_row(model, row) == row, model.__name__
        # (tables created by later migrations, such as metrics' SweepHeartbeat, held no row before it)
        tables_before = {
            model._meta.db_table
            for label in PROJECT_APP_LABELS
            for model in old.get_app_config(label).get_models(include_auto_created=True)
        }
        project_tables = {
            model._meta.db_table
            for label in PROJECT_APP_LABELS
            for model in current_apps.get_app_config(label).get_models(include_auto_created=True)
        }
        assert {model._meta.db_table for model, _ in written} == tables_before & project_tables
        # and through the relations the code follows
        bucket = DirtyBucket.objects.get()
        assert (bucket.usage_event_id, bucket.hour_start) == (UsageEvent.objects.get().pk, HOUR)
        assert list(BillableMetric.objects.get().sources.values_list("api_slug", flat=True)) == ["compute_hours"]
        assert MetricValue.objects.get().value == "4.5"
        assert AuditEntry.objects.get().organisation == Organisation.objects.get(name="Acme")
        assert UsageRecord.objects.filter(usage_event__api_slug="compute_hours", voided=False).count() == 1
        executor = MigrationExecutor(connection)
        assert executor.migration_plan(executor.loader.graph.leaf_nodes()) == []
    finally:
        # Other tests expect the latest schema, also when this one failed half-way.
        migrate_to_latest()


def plain_row(model: type[Model], expected: dict[str, Any]) -> dict[str, Any]:
    stored = model._default_manager.filter(pk=expected[model._meta.pk.attname]).values(*expected).get()
    return {name: plain(value) for name, value in stored.items()}
