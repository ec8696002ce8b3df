"""The OpenAPI document tells the truth: schemathesis sends every documented operation generated requests
(valid and invalid) on a real gunicorn over PostgreSQL, and every answer must be documented.

Three checks, on every answer: `not_a_server_error` (never a 5xx), `status_code_conformance` (the
status is one the document lists for that operation) and `response_schema_conformance` (the body
matches the schema the document gives for that status). A failure is collected with the curl command
that reproduces it, and the test fails naming all of them.

Isolation: every operation runs against its own organisation (its own key, usage event, records,
metric and values), so an operation that revokes, archives or voids cannot starve the others, and
every operation must answer at least one 2xx (a real path-parameter value and a valid body are sent
first), so none is only ever refused.

Bounded: MAX_EXAMPLES generated requests per operation and generation mode, derandomized (the same
requests on every run), no deadline; about a minute on two cores.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.factories import api_key_make, organisation_make, usage_event_make
from tests.processes import gunicorn_server, http_post

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
MAX_EXAMPLES = int(os.environ.get("OPENAPI_MAX_EXAMPLES", "15"))
HOUR = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


METRIC = {
    "name": "CPU",
    "slug": "cpu",
    "usage_event": "compute_hours",
    "aggregation": "sum",
    "field": "cpu_usage_hours",
    "granularity": "hour",
}
WINDOW = {"start": iso(HOUR - dt.timedelta(hours=3)), "end": iso(HOUR + dt.timedelta(hours=3))}

# A valid request for each operation whose valid inputs a generator would rarely hit (the path
# parameters come from the operation's own organisation, see World.path_parameters).
VALID: dict[str, dict[str, Any]] = {
    "POST /api/v1/api-keys/": {"body": {"name": "CI", "scope": "ingest"}},
    "POST /api/v1/usage-events/": {
        "body": {"name": "Seats", "api_slug": "seats", "kind": "event", "dataschema": {"data": {"seats": "Int64"}}}
    },
    "PATCH /api/v1/usage-events/{api_slug}/": {"body": {"description": "Hours of CPU", "reason": "docs"}},
    "PATCH /api/v1/usage-events/{api_slug}/records/{record_id}/": {
        "body": {"data": {"cpu_usage_hours": 2.5}, "reason": "meter fix"}
    },
    "POST /api/v1/usage-events/{api_slug}/records/{record_id}/restore/": {"body": {"reason": "back"}, "voided": True},
    "POST /api/v1/usage-events/{api_slug}/records/void/": {"body": {"customer_id": "b", "reason": "test customer"}},
    "POST /api/v1/metrics/": {"body": {**METRIC, "name": "Peak CPU", "slug": "peak_cpu", "aggregation": "max"}},
    "PATCH /api/v1/metrics/{slug}/": {"body": {"name": "CPU hours", "reason": "rename"}},
    "POST /api/v1/metrics/preview/": {"body": {**METRIC, **WINDOW}},
    "POST /api/v1/metrics/{slug}/preview/": {"body": WINDOW},
    "GET /api/v1/metrics/{slug}/total/": {"query": {"customer_id": "a", **WINDOW}},
    "PATCH /api/v1/metrics/{slug}/values/{value_id}/": {"body": {"override_value": "12.5", "reason": "contract"}},
    "POST /usage/{api_slug}": {
        "body": {"customer_id": "c", "timestamp": iso(HOUR), "data": {"cpu_usage_hours": 1}, "idempotency_key": "k1"}
    },
}


def billing_world_make(organisation: Any) -> dict[str, Any]:
    """Billing rows to point at: a customer without contracts (so that DELETE succeeds), another with an
    active contract whose one phase ends on 2027-01-01, and a fixed product's pricing in no plan or phase."""
    from billing.catalogue import plan_create, pricing_create, product_create
    from billing.contracts import contract_create
    from billing.customers import customer_create
    from zenskar_site.accounts.actors import system_actor

    actor = system_actor(organisation=organisation)
    customer = customer_create(actor=actor, data={"customer_name": "Initech", "external_id": "cus_1"})
    holder = customer_create(actor=actor, data={"customer_name": "Globex", "external_id": "cus_2"})
    product = product_create(actor=actor, data={"name": "Platform", "type": "fixed"})
    pricing = pricing_create(
        actor=actor, product_id=product.id, data={"pricing_data": {"pricing_type": "flat_fee", "unit_amount": "49"}}
    )
    plan = plan_create(actor=actor, data={"name": "Starter", "currency": "USD"})
    contract = contract_create(
        actor=actor,
        data={
            "name": "Globex 2026",
            "customer_id": str(holder.id),
            "currency": "USD",
            "status": "active",
            "start_date": "2026-01-01",
            "phases": [{"name": "Main", "end_date": "2027-01-01"}],
        },
    )
    return {
        "customer_id": str(customer.id),
        "product_id": str(product.id),
        "pricing_id": str(pricing.id),
        "plan_id": str(plan.id),
        "contract_id": str(contract.id),
        "phase_id": str(contract.phases.get().id),
        "holder_id": str(holder.id),
    }


def contract_status_set(parameters: dict[str, Any], status: str) -> None:
    from billing.models import Contract, ContractPause

    if status == "paused":
        ContractPause.objects.create(
            contract_id=parameters["contract_id"], start_date=dt.date(2026, 3, 1), unpause_extension_policy="overlap"
        )
    Contract.objects.filter(id=parameters["contract_id"]).update(status=status)


# Billing: bodies that name the world's rows are functions of its path parameters; `prepare` puts the
# world's contract in the status the operation needs.
VALID.update(
    {
        "POST /api/v1/customers/": {"body": {"customer_name": "Hooli", "external_id": "cus_new", "tax_rate": "7.5"}},
        "PATCH /api/v1/customers/{customer_id}/": {"body": {"email": "billing@initech.example", "reason": "moved"}},
        "POST /api/v1/products/": {"body": {"name": "Seats", "type": "fixed", "sku": "SEATS"}},
        "PATCH /api/v1/products/{product_id}/": {"body": {"name": "Platform fee"}},
        "POST /api/v1/products/{product_id}/pricings/": {
            "body": {
                "pricing_data": {"pricing_type": "per_unit", "unit_amount": "5"},
                "quantity": {"type": "fixed", "quantity": 3},
            }
        },
        "POST /api/v1/plans/": {"body": {"name": "Pro", "currency": "USD"}},
        "PATCH /api/v1/plans/{plan_id}/": {"body": {"name": "Starter+"}},
        "POST /api/v1/plans/{plan_id}/pricings/": {"body": lambda p: {"pricing_ids": [p["pricing_id"]]}},
        "POST /api/v1/contracts/": {
            "body": lambda p: {
                "name": "Initech 2026",
                "customer_id": p["customer_id"],
                "currency": "USD",
                "start_date": "2026-01-01",
                "phases": [{"name": "Main", "pricings": [{"pricing_id": p["pricing_id"]}]}],
            }
        },
        "PATCH /api/v1/contracts/{contract_id}/": {"body": {"name": "Globex 2026-27", "reason": "renewal"}},
        "DELETE /api/v1/contracts/{contract_id}/": {"prepare": lambda p: contract_status_set(p, "draft")},
        "POST /api/v1/contracts/{contract_id}/phases/": {"body": {"name": "Year 2", "start_date": "2027-01-01"}},
        "POST /api/v1/contracts/{contract_id}/phases/{phase_id}/pricings/": {
            "body": lambda p: {"pricing_id": p["pricing_id"]}
        },
        "POST /api/v1/contracts/{contract_id}/pause/": {
            "body": {"start_date": "2026-03-01", "end_date": "2026-04-01", "unpause_extension_policy": "extend"}
        },
        "POST /api/v1/contracts/{contract_id}/resume/": {
            "body": {"resume_date": "2026-03-15"},
            "prepare": lambda p: contract_status_set(p, "paused"),
        },
        "POST /api/v1/contracts/{contract_id}/expire/": {"body": {"expiry_date": "2026-06-01", "reason": "churned"}},
    }
)


def invoice_world_make(organisation: Any) -> dict[str, Any]:
    """Invoicing rows to point at: a contract billing 100 USD a month, January's draft (`invoice_id`), and
    February's approved invoice with a credit note and a payment (`credit_note_id`, `payment_id`)."""
    from billing.catalogue import pricing_create, product_create
    from billing.contracts import contract_create
    from billing.customers import customer_create
    from billing.invoicing.services import credit_note_create, invoice_approve, invoice_generate, payment_record
    from zenskar_site.accounts.actors import system_actor

    actor = system_actor(organisation=organisation)
    customer = customer_create(actor=actor, data={"customer_name": "Umbrella", "external_id": "cus_inv"})
    product = product_create(actor=actor, data={"name": "Support", "type": "fixed"})
    pricing = pricing_create(
        actor=actor, product_id=product.id, data={"pricing_data": {"pricing_type": "flat_fee", "unit_amount": "100"}}
    )
    contract = contract_create(
        actor=actor,
        data={
            "name": "Umbrella 2026",
            "customer_id": str(customer.id),
            "currency": "USD",
            "status": "active",
            "start_date": "2026-01-01",
            "phases": [{"name": "Main", "pricings": [{"pricing_id": str(pricing.id)}]}],
        },
    )
    draft = invoice_generate(actor=actor, contract_id=contract.id, from_date="2026-01-01", to_date="2026-02-01")
    billed = invoice_generate(actor=actor, contract_id=contract.id, from_date="2026-02-01", to_date="2026-03-01")
    invoice_approve(actor=actor, invoice_id=billed.id)
    note = credit_note_create(actor=actor, invoice_id=billed.id, data={"credit_note_amount": "10", "reason": "setup"})
    payment = payment_record(
        actor=actor,
        data={
            "amount": "20",
            "currency_code": "USD",
            "payment_parts": [{"invoice_id": str(billed.id), "amount": "20"}],
        },
    )
    return {
        "invoiced_contract_id": str(contract.id),
        "invoice_id": str(draft.id),
        "credit_note_id": str(note.id),
        "payment_id": str(payment.id),
    }


def invoice_approved(parameters: dict[str, Any]) -> None:
    """The world's draft approved, for the operations that need an approved invoice."""
    from billing.invoicing.models import Invoice
    from billing.invoicing.services import invoice_approve
    from zenskar_site.accounts.actors import system_actor

    invoice = Invoice.objects.select_related("organisation").get(id=parameters["invoice_id"])
    invoice_approve(actor=system_actor(organisation=invoice.organisation), invoice_id=invoice.id)


VALID.update(
    {
        "POST /api/v1/invoices/generate/": {
            "body": lambda p: {
                "contract_id": p["invoiced_contract_id"],
                "from_date": "2026-03-01",
                "to_date": "2026-04-01",
            }
        },
        "GET /api/v1/invoices/upcoming/": {"query": lambda p: {"customer_id": p["holder_id"]}},
        "POST /api/v1/invoices/{invoice_id}/void/": {"body": {"reason": "wrong customer"}, "prepare": invoice_approved},
        "POST /api/v1/invoices/{invoice_id}/discard/": {"body": {"reason": "duplicate"}},
        "POST /api/v1/invoices/{invoice_id}/credit-notes/": {
            "body": {"credit_note_amount": "10", "reason": "SLA breach"},
            "prepare": invoice_approved,
        },
        "POST /api/v1/payments/": {
            "body": lambda p: {
                "amount": "25.50",
                "currency_code": "USD",
                "payment_method": "bank_transfer",
                "timestamp": "2026-02-10T12:00:00Z",
                "payment_parts": [{"invoice_id": p["invoice_id"], "amount": "25.50"}],
            },
            "prepare": invoice_approved,
        },
    }
)


@dataclass
class World:
    """One organisation with one of everything the API can point at."""

    secret: str
    path_parameters: dict[str, Any]
    voided_record_id: int


def world_make(url: str) -> World:
    from metrics.definitions import metric_create
    from metrics.models import MetricValue
    from usage.corrections import record_void
    from usage.models import UsageRecord
    from zenskar_site.accounts.actors import system_actor

    organisation = organisation_make()
    key = api_key_make(organisation=organisation, scope="full")
    victim = api_key_make(organisation=organisation, scope="ingest", name="to revoke")
    usage_event = usage_event_make(organisation=organisation)
    records = [
        {
            "customer_id": customer,
            "timestamp": iso(HOUR + dt.timedelta(minutes=minute)),
            "data": {"cpu_usage_hours": 1.5},
        }
        for customer, minute in (("a", 5), ("a", 10), ("b", 20))
    ]
    status, body = http_post(
        f"{url}/usage/compute_hours",
        json.dumps(records).encode(),
        {"x-api-key": key.secret, "Content-Type": "application/json"},
    )
    assert status == 202, body
    actor = system_actor(organisation=organisation)
    metric_create(actor=actor, body=dict(METRIC))  # CELERY_EAGER: its values are computed on commit
    record_ids = list(UsageRecord.objects.filter(usage_event=usage_event).order_by("id").values_list("id", flat=True))
    record_void(actor=actor, api_slug="compute_hours", record_id=record_ids[1], reason="setup")
    value = MetricValue.objects.filter(metric__organisation=organisation).order_by("id").first()
    assert value is not None, "the metric's values were not computed"
    return World(
        secret=key.secret,
        path_parameters={
            "api_slug": "compute_hours",
            "slug": "cpu",
            "record_id": record_ids[0],
            "value_id": value.id,
            "prefix": victim.api_key.prefix,
            **billing_world_make(organisation),
            **invoice_world_make(organisation),
        },
        voided_record_id=record_ids[1],
    )


@dataclass
class Tally:
    statuses: dict[str, list[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def call(self, label: str, case: Any, secret: str) -> None:
        try:
            response = case.call_and_validate(checks=CHECKS, headers={"x-api-key": secret})
        except requests.RequestException as exc:  # no answer in time: as bad as a 500
            self.failures.append(f"{label}: no answer ({type(exc).__name__})\n{case.as_curl_command()}")
            self.statuses.setdefault(label, []).append(0)
            return
        except FailureGroup as exc:
            kinds = sorted({failure.title for failure in exc.exceptions})
            self.failures.append(f"{label}: {', '.join(kinds)}\n{exc}")
            self.statuses.setdefault(label, []).append(0)
            return
        self.statuses.setdefault(label, []).append(response.status_code)


@pytest.fixture
def server(transactional_db: None) -> Iterator[str]:
    # The rate limits are off: this run measures conformance, and 429 is documented (tests/accounts/test_throttling.py).
    with gunicorn_server(workers=1, threads=1, CELERY_EAGER="1", API_RATE_LIMIT="0", INGEST_RATE_LIMIT="0") as url:
        yield url


def test_every_operation_answers_what_the_openapi_document_says(server: str) -> None:
    schema = schemathesis.openapi.from_url(f"{server}/api/v1/schema/?format=json")
    operations = [result.ok() for result in schema.get_all_operations()]
    tally = Tally()
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        world = world_make(server)
        valid = VALID.get(label, {})
        if "prepare" in valid:
            valid["prepare"](world.path_parameters)
        path_parameters = {
            name: (world.voided_record_id if name == "record_id" and valid.get("voided") else value)
            for name, value in world.path_parameters.items()
            if "{" + name + "}" in operation.path
        }
        kwargs: dict[str, Any] = {"path_parameters": path_parameters}
        if "body" in valid:
            body = valid["body"]
            kwargs["body"] = body(world.path_parameters) if callable(body) else body
            kwargs["media_type"] = "application/json"
        if "query" in valid:
            query = valid["query"]
            kwargs["query"] = query(world.path_parameters) if callable(query) else query
        tally.call(label, operation.Case(**kwargs), world.secret)

        strategy = st.one_of(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=path_parameters),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE, path_parameters=path_parameters),
        )

        @given(case=strategy)
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            tally.call(label, case, world.secret)  # noqa: B023  (called before the loop moves on)

        fuzz()

    summary = {label: sorted(set(codes)) for label, codes in tally.statuses.items()}
    kinds = sorted({failure.split("\n", 1)[0] for failure in tally.failures})
    assert not tally.failures, (
        f"{len(tally.failures)} failures, of {len(kinds)} kinds:\n"
        + "\n".join(kinds)
        + "\n\nThe first of each kind:\n\n"
        + "\n\n".join(next(f for f in tally.failures if f.startswith(kind)) for kind in kinds)
    )
    assert set(summary) == {f"{op.method.upper()} {op.path}" for op in operations}
    never_succeeded = [label for label, codes in summary.items() if not any(200 <= c < 300 for c in codes)]
    assert not never_succeeded, f"operations that never answered 2xx (add a valid request to VALID): {never_succeeded}"
