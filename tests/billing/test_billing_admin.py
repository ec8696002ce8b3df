"""The billing admin: scoped to the organisation admin's own rows; adds and edits go through the services."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from billing.contracts import contract_create
from billing.models import Contract, Customer, Plan, Pricing, Product
from tests.billing.conftest import customer_make, metered_pricing_make, metric_make
from tests.factories import organisation_admin
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import AuditEntry, Membership, Organisation


def admin_client(organisation: Organisation) -> Client:
    client = Client()
    client.force_login(organisation_admin(organisation))
    return client


def contract_make(organisation: Organisation, customer: Customer, name: str, pricing: Pricing) -> Contract:
    return contract_create(
        actor=system_actor(organisation=organisation),
        data={
            "name": name,
            "customer_id": str(customer.id),
            "currency": "USD",
            "status": "active",
            "start_date": "2026-01-01",
            "phases": [{"name": f"{name} phase", "pricings": [{"pricing_id": str(pricing.id)}]}],
        },
    )


@pytest.fixture
def rows(organisation: Organisation, other_organisation: Organisation) -> dict[str, dict[str, Any]]:
    made: dict[str, dict[str, Any]] = {}
    for key, org in (("mine", organisation), ("theirs", other_organisation)):
        customer = customer_make(org, customer_name=f"{key}-customer")
        pricing = metered_pricing_make(org, metric_make(org))
        pricing.product.name = f"{key}-product"
        pricing.product.save()
        from billing.catalogue import plan_create

        plan = plan_create(
            actor=system_actor(organisation=org),
            data={"name": f"{key}-plan", "currency": "USD", "pricing_ids": [str(pricing.id)]},
        )
        contract = contract_make(org, customer, f"{key}-contract", pricing)
        made[key] = {
            "customer": customer,
            "product": pricing.product,
            "pricing": pricing,
            "plan": plan,
            "contract": contract,
            "contractphase": contract.phases.get(),
        }
    return made


def test_every_billing_changelist_and_page_is_scoped_to_the_organisation(
    organisation: Organisation, rows: dict[str, dict[str, Any]]
) -> None:
    client = admin_client(organisation)
    for model in ("customer", "product", "pricing", "plan", "contract", "contractphase"):
        listing = client.get(f"/admin/billing/{model}/")
        assert listing.status_code == 200, model
        assert str(rows["mine"][model].pk) in listing.content.decode(), model
        assert str(rows["theirs"][model].pk) not in listing.content.decode(), model
        assert client.get(f"/admin/billing/{model}/{rows['mine'][model].pk}/change/").status_code == 200, model
        foreign = client.get(f"/admin/billing/{model}/{rows['theirs'][model].pk}/change/")
        assert foreign.status_code in (302, 403, 404), model


def test_a_superuser_sees_every_organisation(rows: dict[str, dict[str, Any]]) -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root@example.com", "root@example.com", "pw-123456"))
    content = client.get("/admin/billing/customer/").content.decode()
    assert "mine-customer" in content
    assert "theirs-customer" in content


def customer_form(**values: Any) -> dict[str, Any]:
    return {
        "customer_name": "Added",
        "external_id": "",
        "tax_rate": "0",
        "payment_terms_days": "30",
        "custom_data": "{}",
        **values,
    }


def test_an_admin_adds_a_customer_through_the_service(organisation: Organisation) -> None:
    client = admin_client(organisation)

    response = client.post(
        "/admin/billing/customer/add/",
        customer_form(organisation=str(organisation.id), external_id="cus_9", tax_rate="7.5"),
    )

    assert response.status_code == 302, response.content.decode()[:3000]
    customer = Customer.objects.get(external_id="cus_9")
    assert customer.organisation == organisation
    assert str(customer.tax_rate) == "7.5000"
    assert AuditEntry.objects.filter(action="customer.create", object_id=str(customer.id)).count() == 1


def test_an_admin_cannot_add_into_another_organisation(
    organisation: Organisation, other_organisation: Organisation
) -> None:
    client = admin_client(organisation)
    response = client.post("/admin/billing/customer/add/", customer_form(organisation=str(other_organisation.id)))
    assert response.status_code == 200  # the form again, with the error
    assert not Customer.objects.exists()


def test_an_admin_edit_is_validated_and_audited(organisation: Organisation) -> None:
    customer = customer_make(organisation, external_id="cus_1")
    customer_make(organisation, external_id="cus_2", customer_name="Second")
    client = admin_client(organisation)
    url = f"/admin/billing/customer/{customer.id}/change/"

    taken = client.post(url, customer_form(customer_name="Initech", external_id="cus_2"))
    renamed = client.post(url, customer_form(customer_name="Initrode", external_id="cus_1"))

    assert taken.status_code == 200
    assert "already exists" in taken.content.decode()
    assert renamed.status_code == 302
    customer.refresh_from_db()
    assert customer.customer_name == "Initrode"
    assert customer.external_id == "cus_1"
    entry = AuditEntry.objects.get(action="customer.update", object_id=str(customer.id))
    assert entry.before["customer_name"] == "Initech"
    assert entry.after["customer_name"] == "Initrode"
    assert entry.actor.startswith("user:")


def test_a_contract_edit_in_the_admin_is_an_amendment(
    organisation: Organisation, rows: dict[str, dict[str, Any]]
) -> None:
    contract = rows["mine"]["contract"]
    client = admin_client(organisation)
    url = f"/admin/billing/contract/{contract.pk}/change/"
    form = {
        "name": "Renamed",
        "description": "",
        "status": "disputed",
        "currency": "USD",
        "start_date": "2026-01-01",
        "end_date": "",
        "anchor_date": "2026-01-01",
        "renewal_policy": "do_not_renew",
        "custom_attributes": "{}",
        "phases-TOTAL_FORMS": "1",
        "phases-INITIAL_FORMS": "1",
        "phases-MIN_NUM_FORMS": "0",
        "phases-MAX_NUM_FORMS": "1000",
    }

    refused = client.post(url, {**form, "end_date": "2025-01-01"})
    done = client.post(url, form)

    assert refused.status_code == 200
    assert done.status_code == 302, done.content.decode()[:3000]
    contract.refresh_from_db()
    assert (contract.name, contract.status) == ("Renamed", "disputed")
    assert (
        AuditEntry.objects.filter(object_type="contract", object_id=str(contract.pk), action="contract.update").count()
        == 1
    )


def test_a_pricing_is_added_in_the_admin_only_on_the_organisations_products(
    organisation: Organisation, rows: dict[str, dict[str, Any]]
) -> None:
    fixed = Product.objects.create(organisation=organisation, name="Seats", type="fixed")
    client = admin_client(organisation)
    form = {
        "organisation": str(organisation.id),
        "name": "Seat fee",
        "description": "",
        "pricing_data": '{"pricing_type": "per_unit", "unit_amount": "10"}',
        "quantity_json": '{"type": "fixed", "quantity": 3}',
        "billing_cadence": "P1M",
        "is_recurring": "on",
        "currency": "",
    }

    foreign = client.post("/admin/billing/pricing/add/", {**form, "product": str(rows["theirs"]["product"].pk)})
    added = client.post("/admin/billing/pricing/add/", {**form, "product": str(fixed.pk)})

    assert foreign.status_code == 200
    assert added.status_code == 302, added.content.decode()[:3000]
    pricing = Pricing.objects.get(product=fixed)
    assert str(pricing.quantity) == "3.000000"
    assert AuditEntry.objects.filter(action="pricing.create", object_id=str(pricing.id)).exists()


def test_a_viewer_sees_but_cannot_add_or_change(organisation: Organisation, rows: dict[str, dict[str, Any]]) -> None:
    viewer = User.objects.create_user("viewer@example.com", "viewer@example.com", "pw-123456", is_staff=True)
    Membership.objects.create(user=viewer, organisation=organisation, role="viewer")
    client = Client()
    client.force_login(viewer)
    customer = rows["mine"]["customer"]

    assert client.get("/admin/billing/customer/").status_code == 200
    assert client.get("/admin/billing/customer/add/").status_code == 403
    client.post(f"/admin/billing/customer/{customer.pk}/change/", customer_form(customer_name="Viewer was here"))
    customer.refresh_from_db()
    assert customer.customer_name == "mine-customer"
    assert Plan.objects.filter(name="mine-plan").exists()
