"""Writes on metric values: an admin's override, set or cleared with a reason and audited; and the
sweep's heartbeat, the health signal.

Definitions are written by `metrics.definitions`, computed values by `metrics.engine`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction

from metrics.engine.builder import decimal_text, to_decimal
from metrics.models import MetricValue, SweepHeartbeat
from metrics.signals import metric_values_changed_announce
from usage.schema import CONVERTERS, InvalidValue
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.errors import NotFound, ValidationFailed


@transaction.atomic
def metric_value_override(
    *, actor: Actor, metric_slug: str, value_id: int, override_value: Any, reason: str
) -> MetricValue:
    """Set (or with None, clear) an admin override on one value; audited with its reason."""
    value = (
        MetricValue.objects.select_for_update()
        .filter(id=value_id, metric__slug=metric_slug, metric__organisation=actor.organisation)
        .first()
    )
    if value is None:
        raise NotFound(f"No value {value_id} in metric {metric_slug!r}.")
    if override_value is not None:
        try:
            override_value = decimal_text(to_decimal(CONVERTERS["Decimal"](override_value)))
        except InvalidValue as exc:
            raise ValidationFailed({"override_value": [str(exc)]}) from None
    if not isinstance(reason, str) or not reason.strip():
        raise ValidationFailed({"reason": ["Say why the value is overridden (or the override cleared)."]})
    before = {
        "metric": metric_slug,
        "customer_id": value.customer_id,
        "period_start": value.period_start.isoformat(),
        "override_value": value.override_value,
        "computed_value": value.computed_value,
    }
    value.override_value = override_value
    value.override_reason = reason.strip() if override_value is not None else ""
    value.save(update_fields=["override_value", "override_reason", "updated_at"])
    metric_values_changed_announce(metric_id=value.metric_id, customer_ids=[value.customer_id])
    audit_record(
        actor=actor,
        action="metric_value.override" if override_value is not None else "metric_value.clear_override",
        object_type="metric_value",
        object_id=str(value.id),
        before=before,
        after={**before, "override_value": value.override_value},
        reason=reason.strip(),
    )
    return value


def sweep_heartbeat_record(*, finished_at: dt.datetime) -> None:
    """Note that a sweep finished: one upsert, so two sweeps at once (two beats) both succeed."""
    SweepHeartbeat.objects.bulk_create(
        [SweepHeartbeat(id=1, finished_at=finished_at)],
        update_conflicts=True,
        unique_fields=["id"],
        update_fields=["finished_at"],
    )
