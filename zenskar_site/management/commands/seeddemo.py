"""Demo data for `make run`: an organisation, its admin, an API key, a usage event and its metric, and
billing: a customer (`cus_123`, the id the example request uses), a metered product with tiered
pricing on the demo metric, a flat monthly fee, and an active contract charging both.

Idempotent: a second run reuses all of them. The API key's secret is kept in DATA_DIR (the database
holds only its hash) so the same key can be printed again.
"""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from billing.catalogue import pricing_create, product_create
from billing.contracts import contract_create
from billing.customers import customer_create
from billing.models import Contract, Customer, Product
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
        billing_seed(actor=actor)
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
                    "  Billing:       customer cus_123, contract 'Demo contract' (tiered CPU hours, platform fee)",
                    f"  Try it:        curl -X POST http://127.0.0.1:{options['port']}/usage/compute_hours \\",
                    f'                   -H "x-api-key: {secret}" -H "Content-Type: application/json" \\',
                    """                   --data-raw '{"customer_id": "cus_123", "timestamp": "<now, ISO 8601>",""",
                    """                                "data": {"cpu_usage_hours": 5}}'""",
                    "",
                ]
            )
        )


def billing_seed(*, actor: Any) -> None:
    """The demo customer, products, pricings and contract, created once (through the services)."""
    organisation = actor.organisation
    customer = Customer.objects.filter(organisation=organisation, external_id="cus_123").first()
    if customer is None:
        customer = customer_create(
            actor=actor,
            data={
                "external_id": "cus_123",
                "customer_name": "Initech",
                "email": "billing@initech.example",
                "address_line1": "4120 Freidrich Lane",
                "address_city": "Austin",
                "address_state": "TX",
                "address_zipCode": "78744",
                "address_country": "United States",
                "address_country_code": "US",
                "tax_rate": "8.25",
            },
        )
    if Contract.objects.filter(organisation=organisation, name="Demo contract").exists():
        return
    compute = Product.objects.filter(organisation=organisation, sku="COMPUTE").first() or product_create(
        actor=actor, data={"name": "Compute", "sku": "COMPUTE", "type": "metered"}
    )
    platform = Product.objects.filter(organisation=organisation, sku="PLATFORM").first() or product_create(
        actor=actor, data={"name": "Platform fee", "sku": "PLATFORM", "type": "fixed"}
    )
    metered = pricing_create(
        actor=actor,
        product_id=compute.id,
        return_existing=True,
        data={
            "name": "CPU hours, tiered",
            "pricing_data": {
                "pricing_type": "tiered",
                "unit_amount": ["0.10", "0.08", "0.05"],
                "up_to": [100, 1000, None],
            },
            "quantity": {"type": "metered", "aggregate_id": "cpu_hours", "unit": "CPU hour"},
            "billing_period": {"cadence": "P1M"},
            "currency": "USD",
        },
    )
    fee = pricing_create(
        actor=actor,
        product_id=platform.id,
        return_existing=True,
        data={
            "name": "Platform fee, monthly",
            "pricing_data": {"pricing_type": "flat_fee", "unit_amount": "49"},
            "billing_period": {"cadence": "P1M"},
            "currency": "USD",
        },
    )
    start = timezone.now().date().replace(day=1)
    contract_create(
        actor=actor,
        data={
            "name": "Demo contract",
            "customer_id": str(customer.id),
            "currency": "USD",
            "status": "active",
            "start_date": start.isoformat(),
            "phases": [{"name": "Main", "pricings": [{"pricing_id": str(metered.id)}, {"pricing_id": str(fee.id)}]}],
        },
    )
