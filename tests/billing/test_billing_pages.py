"""SPEC §8 dashboard, Billing: customers, products and pricings (with the pricing chart's preview), plans,
contracts (from a plan, phases, status actions, amendments); errors next to fields; tenancy (another
organisation's ids are 404s, its rows absent, nothing of theirs changes)."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from html import unescape
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from billing.catalogue import plan_create, pricing_create
from billing.contracts import contract_create
from billing.models import Contract, ContractStatus, Customer, Plan, Pricing, Product
from billing.rating import pricing_parse, rate
from metrics.definitions import metric_create
from metrics.models import BillableMetric, MetricValue
from tests.billing.conftest import TIERED, customer_make, metric_make, product_make
from tests.factories import ApiKeyBundle, api_key_make, organisation_admin, usage_event_make
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import AuditEntry, Membership, Organisation


def month_start() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date().replace(day=1)


def errors_for(html: str, name: str) -> list[str]:
    """The error messages rendered next to the field `name` (its data-errors-for box)."""
    match = re.search(rf'data-errors-for="{re.escape(name)}">((?:<div class="error field-error">.*?</div>)*)', html)
    assert match is not None, f"no error box for {name}"
    return [unescape(m) for m in re.findall(r'class="error field-error">(.*?)</div>', match.group(1))]


@pytest.fixture
def admin(client: Client, organisation: Organisation) -> Client:
    client.force_login(organisation_admin(organisation))
    return client


@pytest.fixture
def viewer(organisation: Organisation, django_user_model: Any) -> Client:
    user: User = django_user_model.objects.create_user(username="viewer@acme.test", password="pw-123456")
    Membership.objects.create(user=user, organisation=organisation, role="viewer")
    client = Client()
    client.force_login(user)
    return client


@dataclass
class Book:
    """One organisation's billing objects, built through the services."""

    customer: Customer
    product: Product
    pricing: Pricing
    plan: Plan
    contract: Contract
    metric: BillableMetric


def book_make(organisation: Organisation, *, name: str, external_id: str) -> Book:
    actor = system_actor(organisation=organisation)
    metric = metric_make(organisation)
    customer = customer_make(organisation, customer_name=name, external_id=external_id)
    product = product_make(organisation, type="metered", name=f"{name} compute")
    pricing = pricing_create(
        actor=actor,
        product_id=product.id,
        data={"pricing_data": TIERED, "quantity": {"type": "metered", "aggregate_id": metric.slug, "unit": "CPU hour"}},
    )
    plan = plan_create(actor=actor, data={"name": f"{name} plan", "currency": "USD", "pricing_ids": [str(pricing.id)]})
    contract = contract_create(
        actor=actor,
        data={
            "name": f"{name} contract",
            "customer_id": str(customer.id),
            "currency": "USD",
            "status": "active",
            "start_date": month_start().isoformat(),
            "plan_id": str(plan.id),
        },
    )
    return Book(customer, product, pricing, plan, contract, metric)


@pytest.fixture
def mine(organisation: Organisation) -> Book:
    return book_make(organisation, name="Acme", external_id="cus_acme")


@pytest.fixture
def theirs(other_organisation: Organisation) -> Book:
    return book_make(other_organisation, name="Globex", external_id="cus_globex")


def send(client: APIClient, records: list[dict[str, Any]]) -> None:
    response = client.post("/usage/compute_hours", data=json.dumps(records), content_type="application/json")
    assert response.status_code == 202, response.content


def record(customer_id: str, hours: float) -> dict[str, Any]:
    now = timezone.now().astimezone(dt.UTC)
    moment = max(now - dt.timedelta(minutes=5), now.replace(hour=0, minute=0, second=0, microsecond=0))
    return {
        "customer_id": customer_id,
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "data": {"cpu_usage_hours": hours, "region": "eu"},
    }


# --- pages render, lists are the organisation's ---


def test_every_billing_page_renders_with_the_organisations_rows_only(admin: Client, mine: Book, theirs: Book) -> None:
    pages = {
        "/billing/customers/": ["Acme", "cus_acme"],
        "/billing/customers/new/": ["Add customer"],
        f"/billing/customers/{mine.customer.id}/": ["Acme", "Upcoming invoice", "Acme contract"],
        "/billing/products/": ["Acme compute"],
        "/billing/products/new/": ["Add product"],
        f"/billing/products/{mine.product.id}/": ["Tiered (graduated)", "0.1 up to 100; 0.08 above"],
        f"/billing/products/{mine.product.id}/pricings/new/": ["Add pricing", "pricing-chart", "cpu_hours"],
        "/billing/plans/": ["Acme plan"],
        "/billing/plans/new/": ["Add plan", "Acme compute"],
        f"/billing/plans/{mine.plan.id}/": ["Acme plan", "Acme contract"],
        "/billing/contracts/": ["Acme contract"],
        "/billing/contracts/new/": ["Add contract", "Acme plan"],
        f"/billing/contracts/{mine.contract.id}/": ["Acme contract", "phase-timeline", "contract.create"],
    }
    for url, expected in pages.items():
        response = admin.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        for text in expected:
            assert text in html, (url, text)
        # Nothing of the other organisation shows on any page, not even in a form's choices.
        for text in ("Globex", "cus_globex", str(theirs.pricing.id), str(theirs.customer.id)):
            assert text not in html, (url, text)
    assert admin.get("/billing/").status_code == 200


def test_the_sidebar_has_a_billing_group(admin: Client, mine: Book) -> None:
    html = admin.get("/billing/products/").content.decode()
    assert '<div class="nav-group">Billing</div>' in html
    assert re.search(r'class="nav-link active" href="/billing/products/">Products</a>', html)
    for name in ("Customers", "Plans", "Contracts"):
        assert f">{name}</a>" in html


def test_customer_search_filters_by_name_external_id_or_email(admin: Client, organisation: Organisation) -> None:
    customer_make(organisation, customer_name="Initech", external_id="cus_ini", email="billing@initech.test")
    customer_make(organisation, customer_name="Umbrella", external_id="cus_umb")
    for query, shown, hidden in (("initech", "Initech", "Umbrella"), ("cus_umb", "Umbrella", "Initech")):
        html = admin.get("/billing/customers/", {"q": query}).content.decode()
        assert shown in html, query
        assert hidden not in html, query
    assert "billing@initech.test" in admin.get("/billing/customers/", {"q": "@initech"}).content.decode()
    assert "No customer matches" in admin.get("/billing/customers/", {"q": "nobody"}).content.decode()


# --- forms: the services' errors next to the fields ---


def test_customer_form_shows_the_services_errors_next_to_the_fields(admin: Client, mine: Book) -> None:
    before = Customer.objects.count()
    response = admin.post(
        "/billing/customers/new/",
        {"customer_name": "", "external_id": "cus_acme", "tax_rate": "101", "payment_terms_days": "30"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert errors_for(html, "customer_name") == ["This field may not be blank."]
    assert "already exists" in errors_for(html, "external_id")[0]
    assert errors_for(html, "tax_rate") == ["Must be between 0 and 100."]
    assert Customer.objects.count() == before

    response = admin.post(
        "/billing/customers/new/", {"customer_name": "Hooli", "external_id": "cus_hooli", "tax_rate": "7.5"}
    )
    created = Customer.objects.get(external_id="cus_hooli")
    assert response.url == f"/billing/customers/{created.id}/"
    assert (created.customer_name, created.tax_rate, created.payment_terms_days) == ("Hooli", Decimal("7.5"), 30)


def tier_post(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Usage",
        "pricing_type": "tiered",
        "tier_up_to": ["100", ""],
        "tier_unit_amount": ["0.10", "0.08"],
        "tier_flat_amount": ["", ""],
        "metric": "cpu_hours",
        "unit": "CPU hour",
        "cadence": "P1M",
        "is_recurring": "on",
        **overrides,
    }


def test_pricing_form_saves_a_tiered_pricing_through_the_service(admin: Client, mine: Book) -> None:
    response = admin.post(
        f"/billing/products/{mine.product.id}/pricings/new/",
        tier_post(
            tier_up_to=["100", "1000", ""], tier_unit_amount=["0.10", "0.08", "0.05"], tier_flat_amount=["5", "", ""]
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    pricing = Pricing.objects.filter(product=mine.product).order_by("-created_at").first()
    assert pricing is not None
    assert pricing.name == "Usage"
    assert pricing.pricing_data == {
        "pricing_type": "tiered",
        "unit_amount": ["0.1", "0.08", "0.05"],
        "up_to": ["100", "1000", None],
        "flat_amount": ["5", "0", "0"],
    }
    assert (pricing.metric, pricing.unit, pricing.cadence) == (mine.metric, "CPU hour", "P1M")


def test_pricing_form_errors_sit_next_to_the_model_fields(admin: Client, mine: Book) -> None:
    url = f"/billing/products/{mine.product.id}/pricings/new/"
    before = Pricing.objects.count()
    html = admin.post(url, tier_post(tier_up_to=["100", "50", ""], tier_unit_amount=["1", "2", "3"])).content.decode()
    assert errors_for(html, "tiers") == ["Tier 2, up to: Tier bounds must increase: 50 is not above 100."]
    html = admin.post(url, tier_post(metric="")).content.decode()
    assert errors_for(html, "metric") == ["A metered quantity needs the billable metric's id or slug."]
    html = admin.post(url, tier_post(pricing_type="package", unit_amount="5", package_size="0")).content.decode()
    assert errors_for(html, "package_size")
    html = admin.post(url, tier_post(pricing_type="per_unit", unit_amount="-1")).content.decode()
    assert errors_for(html, "unit_amount")
    assert Pricing.objects.count() == before


def test_pricing_preview_is_the_rating_engines_amount_at_each_quantity(admin: Client, mine: Book) -> None:
    url = f"/billing/products/{mine.product.id}/pricings/preview/"
    response = admin.post(url, tier_post(pricing_type="volume", tier_flat_amount=["2", "0"]))
    assert response.status_code == 200
    body = response.json()
    assert body["bounds"] == ["100"]
    [series] = body["series"]
    model = pricing_parse(
        pricing_data={
            "pricing_type": "volume",
            "unit_amount": ["0.10", "0.08"],
            "up_to": [100, None],
            "flat_amount": ["2", "0"],
        }
    )
    quantities = [Decimal(q) for q, _ in series["points"]]
    assert len(quantities) > 50
    assert quantities == sorted(quantities)
    assert max(quantities) == 150
    for quantity, amount in series["points"]:
        assert Decimal(amount) == rate(model=model, quantity=Decimal(quantity)).amount
    # The jump at the bound is sampled on both sides: 100 units at 0.10 + 2, just above at 0.08.
    points = dict(series["points"])
    assert points["100"] == "12"
    assert Decimal(points["100.15"]) == Decimal("100.15") * Decimal("0.08")

    bad = admin.post(url, tier_post(tier_up_to=["100", "100"], tier_unit_amount=["1", "2"]))
    assert bad.status_code == 400
    assert "last tier" in bad.json()["errors"]["tiers"][0]
    assert Pricing.objects.filter(product=mine.product).count() == 1  # a preview saves nothing


def test_matrix_pricing_preview_draws_one_curve_per_price(admin: Client, mine: Book) -> None:
    response = admin.post(
        f"/billing/products/{mine.product.id}/pricings/preview/",
        tier_post(pricing_type="matrix", matrix_dimensions="region", matrix_values="eu = 0.2\nus = 0.1"),
    )
    assert response.status_code == 200, response.content
    labels = [s["label"] for s in response.json()["series"]]
    assert labels == ["eu", "us"]
    assert response.json()["series"][0]["points"][-1] == ["100", "20"]


# --- plans and contracts ---


def test_plan_form_and_contract_from_a_plan_copy_its_pricings_into_the_first_phase(admin: Client, mine: Book) -> None:
    response = admin.post(
        "/billing/plans/new/", {"name": "Growth", "currency": "usd", "pricing_ids": [str(mine.pricing.id)]}
    )
    plan = Plan.objects.get(name="Growth")
    assert response.url == f"/billing/plans/{plan.id}/"
    assert plan.currency == "USD"

    html = admin.post(
        "/billing/contracts/new/",
        {
            "name": "",
            "customer_id": str(mine.customer.id),
            "plan_id": str(plan.id),
            "currency": "EUR",
            "status": "draft",
            "start_date": "2026-02-30",
            "renewal_policy": "do_not_renew",
        },
    ).content.decode()
    assert errors_for(html, "name") == ["This field may not be blank."]
    assert errors_for(html, "start_date") == ["'2026-02-30' is not a calendar date."]
    assert errors_for(html, "plan_id") == ["The plan is in USD; the contract is in EUR."]

    response = admin.post(
        "/billing/contracts/new/",
        {
            "name": "Growth deal",
            "customer_id": str(mine.customer.id),
            "plan_id": str(plan.id),
            "currency": "USD",
            "status": "draft",
            "start_date": "2026-01-01",
            "renewal_policy": "do_not_renew",
        },
    )
    contract = Contract.objects.get(name="Growth deal")
    assert response.url == f"/billing/contracts/{contract.id}/"
    phase = contract.phases.get()
    assert [link.pricing_id for link in phase.phase_pricings.all()] == [mine.pricing.id]
    html = admin.get(response.url).content.decode()
    assert 'class="phase-bar phase-active"' in html
    assert "Growth · 2026-01-01 → open" in html

    blank = admin.post(
        "/billing/contracts/new/",
        {
            "name": "Blank",
            "customer_id": str(mine.customer.id),
            "currency": "USD",
            "status": "draft",
            "start_date": "2026-01-01",
            "renewal_policy": "do_not_renew",
        },
    )
    assert blank.status_code == 302
    assert not Contract.objects.get(name="Blank").phases.exists()


def test_contract_phases_status_actions_and_amendments(admin: Client, mine: Book, organisation: Organisation) -> None:
    contract = contract_create(
        actor=system_actor(organisation=organisation),
        data={
            "name": "Deal",
            "customer_id": str(mine.customer.id),
            "currency": "USD",
            "start_date": "2026-01-01",
            "end_date": "2027-01-01",
        },
    )
    base = f"/billing/contracts/{contract.id}/"
    # A phase, then a pricing in it; a phase overlapping it is refused next to the start date.
    assert (
        admin.post(
            base + "phases/", {"phase-name": "Trial", "phase-phase_type": "trial", "phase-end_date": "2026-02-01"}
        ).status_code
        == 302
    )
    refused = admin.post(
        base + "phases/", {"phase-name": "Overlap", "phase-phase_type": "active", "phase-start_date": "2026-01-15"}
    )
    assert refused.status_code == 400
    assert "overlaps the phase 'Trial'" in errors_for(refused.content.decode(), "start_date")[0]
    assert admin.post(base + "phases/", {"phase-name": "Main", "phase-phase_type": "active"}).status_code == 302
    main = contract.phases.get(name="Main")
    assert main.start_date == dt.date(2026, 2, 1)
    prefix = f"p{main.id.hex[:8]}"
    admin.post(base + f"phases/{main.id}/pricings/", {f"{prefix}-pricing_id": str(mine.pricing.id)})
    assert [link.pricing_id for link in main.phase_pricings.all()] == [mine.pricing.id]

    assert admin.post(base + "activate/").status_code == 302
    contract.refresh_from_db()
    assert contract.status == ContractStatus.ACTIVE
    admin.post(
        base + "pause/",
        {"pause-start_date": "2026-03-01", "pause-end_date": "2026-04-01", "pause-unpause_extension_policy": "extend"},
    )
    contract.refresh_from_db()
    assert (contract.status, contract.end_date) == (ContractStatus.PAUSED, dt.date(2027, 2, 1))
    admin.post(base + "resume/", {"act-on": "2026-03-15"})
    contract.refresh_from_db()
    assert contract.status == ContractStatus.ACTIVE
    # An expiry after the end date is refused with the service's message; nothing changes.
    response = admin.post(base + "expire/", {"act-on": "2030-01-01"}, follow=True)
    assert "expiry_date must not be after the contract&#x27;s end date" in response.content.decode()
    contract.refresh_from_db()
    assert contract.status == ContractStatus.ACTIVE
    admin.post(base + "expire/", {"act-on": "2026-06-01"})
    contract.refresh_from_db()
    assert (contract.status, contract.expiry_date) == (ContractStatus.EXPIRED, dt.date(2026, 6, 1))

    html = admin.get(base).content.decode()
    actions = re.findall(r"<code>(contract\.[a-z.]+)</code>", html)
    assert actions == [
        "contract.create",
        "contract.phase.create",
        "contract.phase.create",
        "contract.pricing.add",
        "contract.update",
        "contract.pause",
        "contract.resume",
        "contract.expire",
    ]
    assert "status: draft → active" in html
    assert "status: active → expired" in html
    assert 'id="activate-contract"' not in html
    assert 'id="expire-contract"' not in html
    assert admin.post(base + "frobnicate/").status_code == 404


def test_viewers_see_billing_pages_but_cannot_change_anything(viewer: Client, mine: Book) -> None:
    assert viewer.get(f"/billing/contracts/{mine.contract.id}/").status_code == 200
    html = viewer.get("/billing/customers/").content.decode()
    assert "ADD CUSTOMER" not in html
    assert viewer.post("/billing/customers/new/", {"customer_name": "X"}).status_code == 403
    assert viewer.post(f"/billing/contracts/{mine.contract.id}/expire/").status_code == 403
    mine.contract.refresh_from_db()
    assert mine.contract.status == ContractStatus.ACTIVE


# --- the customer's usage, and usage of no customer ---


def test_customer_page_shows_the_current_period_usage_priced_by_the_contract(
    admin: Client,
    organisation: Organisation,
    mine: Book,
    full_key: ApiKeyBundle,
    client_for: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    pusher = client_for(full_key.secret)
    with django_capture_on_commit_callbacks(execute=True):
        # By external id and by the customer's id: both are the customer's usage.
        send(
            pusher,
            [
                record("cus_acme", 70),
                record("cus_acme", 50),
                record(str(mine.customer.id), 5),
                record("cus_ghost", 9),
            ],
        )
    values = MetricValue.objects.filter(metric=mine.metric)
    assert sum(Decimal(v.computed_value) for v in values) == 134
    html = admin.get(f"/billing/customers/{mine.customer.id}/").content.decode()
    row = re.search(r'<tr data-metric="cpu_hours">(.*?)</tr>', html, re.S)
    assert row is not None, html
    cells = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(1))).strip()
    start = month_start()
    last_day = (start + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1)
    # 125 CPU hours: 100 at 0.10 + 25 at 0.08 = 12.00 USD.
    assert (
        cells == f"Acme compute Acme contract cpu_hours {start:%Y-%m-%d} to {last_day:%Y-%m-%d} 125 CPU hour 12.00 USD"
    )


def test_unmatched_usage_customer_ids_are_listed(
    admin: Client, mine: Book, theirs: Book, full_key: ApiKeyBundle, client_for: Any, other_organisation: Organisation
) -> None:
    pusher = client_for(full_key.secret)
    send(
        pusher,
        [
            record("cus_acme", 1),
            record(str(mine.customer.id), 1),
            record("cus_ghost", 2),
            record("cus_ghost", 3),
            record("cus_spook", 1),
        ],
    )
    their_key = api_key_make(organisation=other_organisation, scope="full")
    send(client_for(their_key.secret), [record("cus_theirs_only", 1)])
    html = admin.get("/billing/customers/").content.decode()
    table = re.search(r'id="unmatched-table">(.*?)</table>', html, re.S)
    assert table is not None
    listed = re.findall(r"<td><code>(.*?)</code></td><td class=\"num amount\">(\d+)</td>", table.group(1))
    assert listed == [("cus_ghost", "2"), ("cus_spook", "1")]
    assert 'href="/billing/customers/new/?external_id=cus_ghost"' in html
    # Once a customer claims the id it is no longer listed.
    customer_make(mine.customer.organisation, customer_name="Ghost", external_id="cus_ghost")
    html = admin.get("/billing/customers/").content.decode()
    table = re.search(r'id="unmatched-table">(.*?)</table>', html, re.S)
    assert table is not None
    assert "cus_ghost" not in table.group(1)
    assert "cus_spook" in table.group(1)


# --- tenancy ---


def their_state(theirs: Book) -> list[Any]:
    return [
        list(Customer.objects.filter(id=theirs.customer.id).values()),
        list(Product.objects.filter(id=theirs.product.id).values()),
        list(Pricing.objects.filter(product=theirs.product).values()),
        list(Plan.objects.filter(id=theirs.plan.id).values()),
        list(Contract.objects.filter(id=theirs.contract.id).values()),
        [list(p.phase_pricings.values()) for p in theirs.contract.phases.all()],
        theirs.contract.pauses.count(),
        AuditEntry.objects.filter(organisation_id=theirs.customer.organisation_id).count(),
    ]


def test_another_organisations_ids_are_not_found_for_reads_and_writes(admin: Client, mine: Book, theirs: Book) -> None:
    before = their_state(theirs)
    phase = theirs.contract.phases.get()
    reads = [
        f"/billing/customers/{theirs.customer.id}/",
        f"/billing/products/{theirs.product.id}/",
        f"/billing/products/{theirs.product.id}/pricings/new/",
        f"/billing/plans/{theirs.plan.id}/",
        f"/billing/contracts/{theirs.contract.id}/",
        "/billing/customers/not-a-uuid/",
    ]
    for url in reads:
        response = admin.get(url)
        assert response.status_code == 404, url
        assert "Globex" not in response.content.decode()
    writes: list[tuple[str, dict[str, Any]]] = [
        (f"/billing/products/{theirs.product.id}/pricings/new/", tier_post()),
        (f"/billing/products/{theirs.product.id}/pricings/preview/", tier_post()),
        (f"/billing/plans/{theirs.plan.id}/", {"pricing_ids": [str(mine.pricing.id)]}),
        (f"/billing/contracts/{theirs.contract.id}/phases/", {"phase-name": "Sneaky"}),
        (f"/billing/contracts/{theirs.contract.id}/phases/{phase.id}/pricings/", {}),
        (f"/billing/contracts/{mine.contract.id}/phases/{phase.id}/pricings/", {}),
        (f"/billing/contracts/{theirs.contract.id}/activate/", {}),
        (
            f"/billing/contracts/{theirs.contract.id}/pause/",
            {"pause-start_date": month_start().isoformat(), "pause-unpause_extension_policy": "overlap"},
        ),
        (f"/billing/contracts/{theirs.contract.id}/expire/", {}),
    ]
    for url, data in writes:
        assert admin.post(url, data).status_code == 404, url
    # Their ids in my forms are refused as choices that do not exist, next to the field.
    html = admin.post(
        "/billing/contracts/new/",
        {
            "name": "X",
            "customer_id": str(theirs.customer.id),
            "plan_id": str(theirs.plan.id),
            "currency": "USD",
            "status": "draft",
            "start_date": "2026-01-01",
            "renewal_policy": "do_not_renew",
        },
    ).content.decode()
    assert "Select a valid choice" in errors_for(html, "customer_id")[0]
    assert "Select a valid choice" in errors_for(html, "plan_id")[0]
    html = admin.post(
        "/billing/plans/new/", {"name": "X", "currency": "USD", "pricing_ids": [str(theirs.pricing.id)]}
    ).content.decode()
    assert "Select a valid choice" in errors_for(html, "pricing_ids")[0]
    my_phase = mine.contract.phases.get()
    admin.post(
        f"/billing/contracts/{mine.contract.id}/phases/{my_phase.id}/pricings/",
        {f"p{my_phase.id.hex[:8]}-pricing_id": str(theirs.pricing.id)},
    )
    assert not my_phase.phase_pricings.filter(pricing=theirs.pricing).exists()
    assert their_state(theirs) == before
    assert not Contract.objects.filter(name="X").exists()
    assert not Plan.objects.filter(name="X").exists()


def test_the_current_usage_never_counts_another_organisations_records(
    admin: Client,
    mine: Book,
    other_organisation: Organisation,
    client_for: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """The other organisation meters the same customer id on its own metric: not this customer's usage."""
    actor = system_actor(organisation=other_organisation)
    usage_event_make(organisation=other_organisation)
    with django_capture_on_commit_callbacks(execute=True):
        metric_create(
            actor=actor,
            body={
                "name": "x",
                "slug": "cpu_hours",
                "usage_event": "compute_hours",
                "aggregation": "sum",
                "field": "cpu_usage_hours",
                "granularity": "day",
            },
        )
        send(client_for(api_key_make(organisation=other_organisation).secret), [record("cus_acme", 500)])
    html = admin.get(f"/billing/customers/{mine.customer.id}/").content.decode()
    assert re.search(r'class="num amount quantity">0 ', html), html
