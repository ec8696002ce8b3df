"""The health signal for monitoring: the database answers, and beat's metrics sweep ran recently.

A worker that died (or a beat that died, or a broker that is unreachable) stops the sweep, and with it
the catch-up of dirty hours, stalled recomputes and lost tasks; its heartbeat row then grows old. The
same report backs `manage.py health` (which can also ping the workers) and `GET /health`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from metrics.selectors import sweep_heartbeat_age


@dataclass
class HealthReport:
    database_ok: bool
    sweep_age_seconds: float | None
    sweep_max_age_seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def health_report(*, sweep_max_age_seconds: float | None = None) -> HealthReport:
    limit = settings.HEALTH_SWEEP_MAX_AGE_SECONDS if sweep_max_age_seconds is None else sweep_max_age_seconds
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        age = sweep_heartbeat_age(now=timezone.now())
    except DatabaseError as exc:
        # The class only: /health is public, and a driver's message can name hosts.
        return HealthReport(False, None, limit, [f"the database is unreachable ({type(exc).__name__})"])
    report = HealthReport(True, age, limit)
    if age is None:
        report.problems.append("the metrics sweep has never run: start beat and a worker")
    elif age > limit:
        report.problems.append(
            f"the metrics sweep last finished {age:.0f} s ago (limit {limit:.0f} s): "
            "no worker, no beat, or no broker; dirty metrics are not being refreshed"
        )
    return report


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """200 when healthy, 503 otherwise; the body says why (no names, counts or data: ages only)."""
    report = health_report()
    body = {
        "status": "ok" if report.ok else "failing",
        "database": "ok" if report.database_ok else "unreachable",
        "sweep_age_seconds": None if report.sweep_age_seconds is None else round(report.sweep_age_seconds, 1),
        "sweep_max_age_seconds": report.sweep_max_age_seconds,
        "problems": report.problems,
    }
    return JsonResponse(body, status=200 if report.ok else 503)
