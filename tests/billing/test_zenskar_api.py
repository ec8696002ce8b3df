"""The Zenskar-compatible paths (SPEC §10): Zenskar's argument names and positions, `id` on every object,
`cursor` + `limit` pages (default 10), its filters and dates, on the same services as /api/v1."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from billing.contracts import contract_create
from billing.models import Contract, Customer
from metrics.models import BillableMetric, MetricValue
from tests.billing.conftest import customer_make, flat_fee_make, metric_make
from tests.billing.zenskar_support import SCHEMA, ZenskarClient, created
from tests.factories import ApiKeyBundle
from usage.models import UsageRecord
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import AuditEntry, Organisation


@pytest.fixture(autouse=True)
def _unthrottled(settings: Any) -> None:
    """These tests send many requests a second; the rate limits have their own tests."""
    settings.API_RATE_LIMIT = 0
    settings.INGEST_RATE_LIMIT = 0


@pytest.fixture
def zenskar(full_key: ApiKeyBundle) -> ZenskarClient:
    return ZenskarClient(full_key)


def value_make(metric: BillableMetric, customer_id: str, day: dt.date, value: str) -> MetricValue:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return MetricValue.objects.create(
        metric=metric,
        customer_id=customer_id,
        period_start=start,
        period_end=start + dt.timedelta(days=1),
        computed_value=value,
        metric_version=1,
    )


def test_paths_answer_with_and_without_a_trailing_slash_and_a_post_is_never_redirected(zenskar: ZenskarClient) -> None:
    first = zenskar.post("/customer", {"customer_name": "No slash"})
    second = zenskar.post("/customer/", {"customer_name": "Slash"})

    assert (first.status_code, second.status_code) == (201, 201)
    assert Customer.objects.filter(customer_name__in=["No slash", "Slash"]).count() == 2
    assert zenskar.get(f"/customers/{first.json()['id']}").json()["customer_name"] == "No slash"
    assert zenskar.get(f"/customers/{first.json()['id']}/").json()["customer_name"] == "No slash"


def test_objects_made_through_zenskar_paths_are_the_api_v1_objects_and_are_audited(
    zenskar: ZenskarClient, full_key: ApiKeyBundle, organisation: Organisation
) -> None:
    customer = created(
        zenskar.post(
            "/customer",
            {
                "customer_name": "Initech",
                "external_id": "cus_9",
                "address_zipCode": "94107",
                "communications_enabled": True,  # Zenskar's, no counterpart here: ignored
                "business_entity_id": "be_1",
            },
        )
    )

    v1 = zenskar.client.get(f"/api/v1/customers/{customer['id']}/", **zenskar.headers).json()
    assert v1 == customer
    entry = AuditEntry.objects.get(organisation=organisation, action="customer.create")
    assert entry.actor == f"api_key:{full_key.api_key.prefix}"
    assert entry.object_id == customer["id"]


def test_lists_take_cursor_and_limit_with_ten_rows_by_default(
    zenskar: ZenskarClient, organisation: Organisation
) -> None:
    for index in range(13):
        customer_make(organisation, customer_name=f"Customer {index:02}")

    first = zenskar.get("/customer", {"sort_key": "customer_name", "sort_type": "asc"}).json()
    second = zenskar.client.get(first["next"], **zenskar.headers).json()
    small = zenskar.get("/customer", {"limit": 3, "sort_key": "customer_name", "order": "desc"}).json()

    assert [row["customer_name"] for row in first["results"]] == [f"Customer {i:02}" for i in range(10)]
    assert [row["customer_name"] for row in second["results"]] == [f"Customer {i:02}" for i in range(10, 13)]
    assert second["next"] is None
    assert [row["customer_name"] for row in small["results"]] == ["Customer 12", "Customer 11", "Customer 10"]


def test_customer_filters_follow_zenskar_names(zenskar: ZenskarClient, organisation: Organisation) -> None:
    a = customer_make(organisation, customer_name="Alpha Ltd", external_id="ext_a", email="ops@alpha.test")
    b = customer_make(organisation, customer_name="Beta Inc", external_id="ext_b", email="ops@beta.test")
    customer_make(organisation, customer_name="Gamma", external_id="other_c")

    def names(params: dict[str, Any]) -> list[str]:
        rows = zenskar.get("/customer", {**params, "sort_key": "customer_name", "sort_type": "asc"}).json()["results"]
        return [row["customer_name"] for row in rows]

    assert names({"customer_name__ilike": "ALPHA"}) == ["Alpha Ltd"]
    assert names({"customer_name__ilike": "%a"}) == ["Gamma"]  # SQL LIKE when it has %: ends with "a"
    assert names({"external_id__ilike": "ext%"}) == ["Alpha Ltd", "Beta Inc"]
    assert names({"external_id": "ext_b"}) == ["Beta Inc"]
    assert names({"email__ilike": "beta"}) == ["Beta Inc"]
    assert names({"id__in": f"{a.id},{b.id}"}) == ["Alpha Ltd", "Beta Inc"]
    assert names({"id": str(a.id)}) == ["Alpha Ltd"]
    assert names({"search": "other"}) == ["Gamma"]
    assert names({"search_name_external_id": "ext_"}) == ["Alpha Ltd", "Beta Inc"]
    assert names({"created_at__gte": int(timezone.now().timestamp()) + 60}) == []
    assert names({"created_at__lte": "2100-01-01"}) == ["Alpha Ltd", "Beta Inc", "Gamma"]
    assert names({"auto_charge_enabled": "true", "unknown_argument": "x"}) == ["Alpha Ltd", "Beta Inc", "Gamma"]


def test_customer_patch_and_delete(zenskar: ZenskarClient, organisation: Organisation) -> None:
    free = customer_make(organisation, customer_name="Free")
    bound = customer_make(organisation, customer_name="Bound")
    contract_create(
        actor=system_actor(organisation=organisation),
        data={"name": "C", "customer_id": str(bound.id), "currency": "USD", "start_date": "2026-01-01"},
    )

    patched = zenskar.patch(f"/customers/{free.id}", {"email": "new@free.test", "auto_charge_enabled": True})
    deleted = zenskar.delete(f"/customers/{free.id}")
    refused = zenskar.delete(f"/customers/{bound.id}")

    assert patched.status_code == 200
    assert patched.json()["email"] == "new@free.test"
    assert deleted.status_code == 200
    assert deleted.json()["id"] == str(free.id)
    assert deleted.json()["archived"] is True
    assert refused.status_code == 409
    assert [row["id"] for row in zenskar.get("/customer").json()["results"]] == [str(bound.id)]


def test_raw_metrics_list_filter_and_logs(zenskar: ZenskarClient, organisation: Organisation) -> None:
    compute = created(
        zenskar.post(
            "/rawmetric", {"name": "Compute", "api_slug": "compute", "dataschema": SCHEMA, "column_order": ["x"]}
        )
    )
    created(zenskar.post("/rawmetric", {"name": "Storage", "api_slug": "storage", "dataschema": SCHEMA}))
    now = timezone.now().replace(microsecond=0)
    records = [
        {
            "customer_id": customer,
            "timestamp": (now - dt.timedelta(hours=hours)).isoformat(),
            "data": {"cpu_usage_hours": hours},
        }
        for customer, hours in (("a", 1), ("a", 2), ("b", 3), ("a", 30))
    ]
    assert zenskar.post("/usage/compute", records).status_code == 202

    assert [row["api_slug"] for row in zenskar.get("/rawmetric", {"api_slug__ilike": "STOR"}).json()["results"]] == [
        "storage"
    ]
    assert [row["api_slug"] for row in zenskar.get("/rawmetric", {"search": "comp"}).json()["results"]] == ["compute"]
    assert [row["id"] for row in zenskar.get("/rawmetric", {"id": compute["id"]}).json()["results"]] == [compute["id"]]
    assert compute["endpoint"].endswith("/usage/compute")
    logs = zenskar.get_with_body(
        f"/rawmetric/{compute['id']}/logs",
        {
            "filters": {"customer_id": "a", "start_date": (now - dt.timedelta(hours=24)).isoformat()},
            "limit": 1,
            "order_by": "-timestamp",
        },
    ).json()
    assert [row["data"]["cpu_usage_hours"] for row in logs["results"]] == [1]
    assert logs["has_more"] is True
    rest = zenskar.get(f"/rawmetric/{compute['id']}/logs", {"offset": 1, "limit": 10}).json()
    assert len(rest["results"]) == 3
    assert UsageRecord.objects.filter(usage_event_id=compute["id"]).count() == 4


def test_aggregates_list_detail_and_logs(zenskar: ZenskarClient, organisation: Organisation) -> None:
    metric = metric_make(organisation, slug="cpu_hours")
    other = metric_make(organisation, slug="cpu_peak", aggregation="max")
    customer = customer_make(organisation, external_id="cus_1")
    value_make(metric, "cus_1", dt.date(2026, 1, 31), "2")
    value_make(metric, "cus_1", dt.date(2026, 2, 1), "3")
    value_make(metric, str(customer.id), dt.date(2026, 2, 2), "4")
    value_make(metric, "cus_2", dt.date(2026, 2, 3), "5")

    listed = zenskar.get("/aggregates", {"sort_key": "name", "sort_type": "desc"}).json()["results"]
    by_source = zenskar.get("/aggregates", {"datasource": "compute_hours", "id": other.id}).json()["results"]
    detail = zenskar.get(f"/aggregates/{metric.id}").json()
    by_slug = zenskar.get("/aggregates/cpu_hours").json()
    february = zenskar.get(
        f"/aggregates/logs/{metric.id}", {"month": "2026-02", "customer_id": str(customer.id)}
    ).json()

    assert [row["slug"] for row in listed] == ["cpu_peak", "cpu_hours"]
    assert [row["id"] for row in by_source] == [other.id]
    assert detail["id"] == by_slug["id"] == metric.id
    assert detail["raw_metric_id"] == metric.usage_event_id
    assert sorted(row["value"] for row in february["results"]) == ["3", "4"]  # both of the customer's ids


def test_estimates_sum_the_customers_external_id_and_id_and_honour_overrides(
    zenskar: ZenskarClient, organisation: Organisation
) -> None:
    metric = metric_make(organisation)
    customer = customer_make(organisation, external_id="cus_1")
    value_make(metric, "cus_1", dt.date(2026, 3, 1), "1.25")
    overridden = value_make(metric, "cus_1", dt.date(2026, 3, 2), "100")
    overridden.override_value = "2"
    overridden.save()
    value_make(metric, str(customer.id), dt.date(2026, 3, 3), "0.5")
    value_make(metric, "cus_1", dt.date(2026, 3, 4), "1000")  # after the range
    value_make(metric, "cus_2", dt.date(2026, 3, 1), "1000")  # another customer

    answer = zenskar.get(
        "/aggregates/estimates",
        {
            "aggregate_id": metric.id,
            "customer_id": "cus_1",
            "start_date": "2026-03-01",
            "end_date": "2026-03-04T00:00:00Z",
        },
    ).json()

    assert answer["quantity"] == "3.75"
    assert answer["customer_id"] == str(customer.id)
    assert answer["estimates"] == [
        {"customer_id": "cus_1", "quantity": "3.25"},
        {"customer_id": str(customer.id), "quantity": "0.5"},
    ]


def test_estimates_of_a_non_additive_metric_over_several_buckets_are_refused(
    zenskar: ZenskarClient, organisation: Organisation
) -> None:
    metric = metric_make(organisation, slug="peak", aggregation="max")
    customer = customer_make(organisation, external_id="cus_1")
    value_make(metric, "cus_1", dt.date(2026, 3, 1), "5")
    value_make(metric, "cus_1", dt.date(2026, 3, 2), "7")
    window = {"aggregate_id": "peak", "customer_id": str(customer.id)}

    one_day = zenskar.get("/aggregates/estimates", {**window, "start_date": "2026-03-02", "end_date": "2026-03-03"})
    two_days = zenskar.get("/aggregates/estimates", {**window, "start_date": "2026-03-01", "end_date": "2026-03-03"})

    assert one_day.json()["quantity"] == "7"
    assert two_days.status_code == 400
    assert "end_date" in two_days.json()["errors"]


def test_products_and_pricing(zenskar: ZenskarClient, organisation: Organisation) -> None:
    metric_make(organisation)
    product = created(
        zenskar.post("/products", {"name": "Seats", "type": "fixed", "sku": "seats", "tax_codes": ["T1"]})
    )
    created(zenskar.post("/products", {"name": "Support", "type": "fixed"}))
    body = {
        "name": "Monthly",
        "pricing_data": {"pricing_type": "flat_fee", "unit_amount": 49, "currency": "USD"},
        "is_recurring": True,
    }

    first = created(zenskar.post(f"/products/{product['id']}/pricing", body))
    again = zenskar.post(f"/products/{product['id']}/pricing?return_existing=true", body)
    copy = created(zenskar.post(f"/products/{product['id']}/pricing", body))
    patched = zenskar.patch(f"/products/{product['id']}", {"name": "Seats v2", "type": "metered", "is_active": False})

    assert again.json()["id"] == first["id"]
    assert copy["id"] != first["id"]
    assert first["pricing_data"] == {"pricing_type": "flat_fee", "unit_amount": "49"}
    assert first["currency"] == "USD"
    assert (patched.status_code, patched.json()["name"], patched.json()["type"]) == (200, "Seats v2", "fixed")
    assert [row["id"] for row in zenskar.get(f"/products/{product['id']}/pricing").json()["results"]] == [
        first["id"],
        copy["id"],
    ]
    assert [row["name"] for row in zenskar.get("/products", {"name__ilike": "seat"}).json()["results"]] == ["Seats v2"]


def test_plans_products_and_preview(zenskar: ZenskarClient, organisation: Organisation) -> None:
    fee = flat_fee_make(organisation, amount="49")
    setup = flat_fee_make(organisation, amount="100")
    setup.is_recurring = False
    setup.save()
    metric = metric_make(organisation)
    metered = created(zenskar.post("/products", {"name": "Compute", "type": "metered"}))
    usage = created(
        zenskar.post(
            f"/products/{metered['id']}/pricing",
            {
                "pricing_data": {"pricing_type": "per_unit", "unit_amount": "0.1"},
                "quantity": {"type": "metered", "aggregate_id": metric.slug},
            },
        )
    )

    plan = created(
        zenskar.post(
            "/templates/plan", {"name": "Pro", "currency": "USD", "products": [str(fee.id)], "display_config": {"x": 1}}
        )
    )
    added = zenskar.post(
        f"/templates/plan/{plan['id']}/products",
        {"products": [{"product_id": str(setup.product_id), "pricing_id": str(setup.id)}, {"pricing_id": usage["id"]}]},
    )
    preview = zenskar.post(
        f"/templates/plan/{plan['id']}/preview", {"start_date": "2026-01-01", "end_date": "2026-03-15"}
    ).json()
    one_period = zenskar.post(f"/templates/plan/{plan['id']}/preview", {"start_date": "2026-01-10"}).json()

    assert added.status_code == 200
    assert [row["id"] for row in added.json()["pricings"]] == [str(fee.id), str(setup.id), usage["id"]]
    assert [
        row["name"]
        for row in zenskar.get("/templates/plan", {"status": "active", "name__ilike": "pro"}).json()["results"]
    ] == ["Pro"]
    assert zenskar.get(f"/templates/plan/{plan['id']}").json()["id"] == plan["id"]
    monthly, once, per_unit = preview["pricings"]
    # 49 for January and February, 49 x 14/31 for March 1-14 (22.129... -> 22.13); the set-up fee once.
    assert [p["amount"] for p in monthly["periods"]] == ["49", "49", "22.13"]
    assert monthly["amount"] == "120.13"
    assert [p["amount"] for p in once["periods"]] == ["100"]
    assert "periods" not in per_unit
    assert per_unit["pricing_data"] == {"pricing_type": "per_unit", "unit_amount": "0.1"}
    assert per_unit["quantity"]["aggregate_id"] == metric.id
    assert preview["fixed_total"] == "220.13"
    assert [(p["start_date"], p["end_date"]) for p in one_period["pricings"][0]["periods"]] == [
        ("2026-01-10", "2026-02-10")
    ]


def test_contract_lifecycle_through_zenskar_paths(zenskar: ZenskarClient, organisation: Organisation) -> None:
    customer = customer_make(organisation)
    fee = flat_fee_make(organisation)
    contract = created(
        zenskar.post(
            "/contract_v2",
            {
                "name": "Main",
                "status": "active",
                "currency": "usd",
                "customer_id": str(customer.id),
                "start_date": 1767225600,  # 2026-01-01T00:00:00Z in Unix seconds
                "end_date": "2027-01-01T00:00:00.000Z",
                "bill_parent_customer": False,
                "source": "api",
                "phases": [
                    {
                        "name": "Year one",
                        "phase_type": "active",
                        "source_plan_phase_id": "x",
                        "pricings": [{"pricing_id": str(fee.id), "plan_id": "ignored"}],
                    }
                ],
            },
        )
    )
    path = f"/contract_v2/{contract['id']}"
    assert (contract["start_date"], contract["end_date"], contract["currency"]) == ("2026-01-01", "2027-01-01", "USD")
    phase_id = contract["phases"][0]["id"]

    put = zenskar.put(
        path,
        {
            **{k: contract[k] for k in ("name", "status", "currency", "start_date", "customer_id")},
            "description": "Renewed",
            "phases": contract["phases"],
            "tags": ["x"],
        },
    )
    inline = zenskar.post(
        f"{path}/phases/{phase_id}/pricing",
        {
            "product": {"name": "Onboarding", "type": "fixed", "id": "ignored"},
            "pricing": {
                "pricing_data": {"pricing_type": "flat_fee", "unit_amount": 500},
                "is_recurring": False,
                "id": "ignored",
            },
            "start_date": "2026-02-01T00:00:00Z",
        },
    )
    paused = zenskar.post(
        f"{path}/pause", {"start_date": "2026-03-01", "end_date": "2026-04-01", "unpause_extension_policy": "extend"}
    )
    resumed = zenskar.patch(f"{path}/resume")
    expired = zenskar.patch(f"{path}/expire", {"expiry_date": "2026-10-01"})
    amendments = zenskar.get(f"{path}/amendments", {"limit": 100}).json()["results"]
    refused_delete = zenskar.delete(path)

    assert put.status_code == 200, put.json()
    assert put.json()["description"] == "Renewed"
    assert inline.status_code == 201, inline.json()
    assert inline.json()["start_date"] == "2026-02-01"
    assert paused.json()["status"] == "paused"
    assert paused.json()["end_date"] == "2027-02-01"  # extended by the 31 paused days
    assert resumed.json()["status"] == "active"
    assert (expired.json()["status"], expired.json()["expiry_date"]) == ("expired", "2026-10-01")
    assert [entry["action"] for entry in amendments] == [
        "contract.create",
        "contract.update",
        "contract.pricing.add",
        "contract.pause",
        "contract.resume",
        "contract.expire",
    ]
    assert refused_delete.status_code == 409


def test_contract_phases_delete_and_filters(zenskar: ZenskarClient, organisation: Organisation) -> None:
    actor = system_actor(organisation=organisation)
    alice = customer_make(organisation, customer_name="Alice")
    bob = customer_make(organisation, customer_name="Bob")
    made = {
        name: contract_create(
            actor=actor,
            data={
                "name": name,
                "customer_id": str(customer.id),
                "currency": "USD",
                "status": status,
                "start_date": start,
            },
        )
        for name, customer, status, start in (
            ("A1", alice, "active", "2026-01-01"),
            ("A2", alice, "draft", "2026-06-01"),
            ("B1", bob, "disputed", "2026-03-01"),
        )
    }

    def names(params: dict[str, Any]) -> list[str]:
        rows = zenskar.get("/contract_v2", {**params, "sort_key": "name", "order": "asc"}).json()["results"]
        return [row["name"] for row in rows]

    assert names({"customer_id": str(alice.id)}) == ["A1", "A2"]
    assert names({"customer_id__in": f"{alice.id},{bob.id}"}) == ["A1", "A2", "B1"]
    assert names({"status__in": "active,disputed"}) == ["A1", "B1"]
    assert names({"status": "draft"}) == ["A2"]
    assert names({"start_date__gte": "2026-03-01", "start_date__lt": "2026-06-01"}) == ["B1"]
    assert names({"start_date": "2026-06-01T00:00:00Z"}) == ["A2"]
    assert names({"end_date__isnull": "true"}) == ["A1", "A2", "B1"]
    assert names({"name__in": "A1,B1"}) == ["A1", "B1"]
    assert names({"name__neq": "A1"}) == ["A2", "B1"]
    assert names({"id": str(made["B1"].id)}) == ["B1"]
    draft = made["A2"]
    phase = zenskar.post(
        f"/contract_v2/{draft.id}/phases",
        {"name": "Later", "start_date": "2027-06-01T00:00:00Z", "phase_type": "trial"},
    )
    assert phase.status_code == 201, phase.json()
    assert (phase.json()["start_date"], phase.json()["phase_type"]) == ("2027-06-01", "trial")
    deleted = zenskar.delete(f"/contract_v2/{draft.id}")
    assert deleted.json() == {"id": str(draft.id), "deleted": True}
    assert not Contract.objects.filter(id=draft.id).exists()


def test_system_datetime_is_the_servers_utc_clock(zenskar: ZenskarClient) -> None:
    body = zenskar.get("/system/datetime").json()

    assert abs(int(timezone.now().timestamp()) - body["timestamp"]) < 5
    assert body["datetime"].endswith("Z")
    assert body["timezone"] == "UTC"
    assert Decimal(body["timestamp"]) == int(dt.datetime.fromisoformat(body["datetime"]).timestamp())
