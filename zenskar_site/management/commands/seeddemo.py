"""Demo data for `make run`: an organisation, its admin, an API key and a usage event.

Idempotent: a second run reuses all of them. The API key's secret is kept in DATA_DIR (the database
holds only its hash) so the same key can be printed again.
"""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from metrics.definitions import metric_create
from metrics.models import BillableMetric
from usage.models import UsageEvent
from usage.services import usage_event_create
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import ApiKey, Organisation
from zenskar_site.accounts.services import api_key_create, api_key_hash, organisation_create

DEMO_ORG = "Demo Company"
DEMO_EMAIL = "admin@example.com"
DEMO_PASSWORD = "demo-password"


class Command(BaseCommand):
    help = "Create (or reuse) the demo organisation, admin, API key and usage event."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", default="8000", help="Only used to print the dashboard's URL.")

    def handle(self, *args: Any, **options: Any) -> None:
        organisation = Organisation.objects.filter(name=DEMO_ORG).first()
        if organisation is None:
            organisation, _ = organisation_create(name=DEMO_ORG, admin_email=DEMO_EMAIL, password=DEMO_PASSWORD)
        else:
            user = get_user_model().objects.get(username=DEMO_EMAIL)
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        actor = system_actor(organisation=organisation)
        key_file = Path(settings.DATA_DIR) / "demo_api_key"
        secret = key_file.read_text().strip() if key_file.exists() else ""
        if (
            not secret
            or not ApiKey.objects.filter(
                organisation=organisation, key_hash=api_key_hash(secret=secret), revoked_at__isnull=True
            ).exists()
        ):
            _, secret = api_key_create(actor=actor, name="Demo key", scope="full")
            key_file.parent.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secret + "\n")
            key_file.chmod(0o600)
        if not UsageEvent.objects.filter(organisation=organisation, api_slug="compute_hours").exists():
            usage_event_create(
                actor=actor,
                name="Compute hours",
                api_slug="compute_hours",
                kind="event",
                description="CPU hours used by a customer's workloads.",
                dataschema={"data": {"cpu_usage_hours": "Float64", "region": "Nullable(String)"}},
            )
        if not BillableMetric.objects.filter(organisation=organisation, slug="cpu_hours").exists():
            metric_create(
                actor=actor,
                body={
                    "name": "CPU hours per day",
                    "slug": "cpu_hours",
                    "usage_event": "compute_hours",
                    "aggregation": "sum",
                    "field": "cpu_usage_hours",
                    "granularity": "day",
                },
            )
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "  Usage metering is starting (embedded mode: SQLite, no external services).",
                    f"  Dashboard:     http://127.0.0.1:{options['port']}/",
                    f"  Login:         {DEMO_EMAIL}",
                    f"  Password:      {DEMO_PASSWORD}",
                    f"  Organisation:  {organisation.id}",
                    f"  API key:       {secret}",
                    f"  Try it:        curl -X POST http://127.0.0.1:{options['port']}/usage/compute_hours \\",
                    f'                   -H "x-api-key: {secret}" -H "Content-Type: application/json" \\',
                    """                   --data-raw '{"customer_id": "cus_123", "timestamp": "<now, ISO 8601>",""",
                    """                                "data": {"cpu_usage_hours": 5}}'""",
                    "",
                ]
            )
        )
