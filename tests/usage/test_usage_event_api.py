"""SPEC §4 usage-event definitions through the management API."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.factories import api_key_make, usage_event_make
from usage.models import UsageEvent
from usage.schema import BASE_TYPES
from zenskar_site.accounts.models import AuditEntry, Organisation

URL = "/api/v1/usage-events/"


def body(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "name": "Compute hours",
        "api_slug": "compute_hours",
        "kind": "event",
        "dataschema": {"data": {"cpu_usage_hours": "Float64"}},
    }
    payload.update(overrides)
    return payload


def test_creates_a_usage_event_with_every_type_and_its_nullable_form(
    api: APIClient, organisation: Organisation
) -> None:
    data = {}
    for base in BASE_TYPES:
        data[f"f_{base.lower()}"] = base
        data[f"n_{base.lower()}"] = f"Nullable({base})"

    response = api.post(
        URL, body(dataschema={"customer_id": "String", "timestamp": "DateTime64", "data": data}), format="json"
    )

    assert response.status_code == 201, response.json()
    stored = UsageEvent.objects.get(organisation=organisation, api_slug="compute_hours")
    assert stored.dataschema == {"customer_id": "String", "timestamp": "DateTime64", "data": data}
    assert response.json()["dataschema"]["data"] == data
    assert response.json()["endpoint"].endswith("/usage/compute_hours")


def test_root_entries_may_be_omitted(api: APIClient) -> None:
    response = api.post(URL, body(), format="json")
    assert response.status_code == 201
    assert response.json()["dataschema"] == {
        "customer_id": "String",
        "timestamp": "DateTime64",
        "data": {"cpu_usage_hours": "Float64"},
    }


def test_aggregate_usage_event_needs_a_period(api: APIClient) -> None:
    missing = api.post(URL, body(kind="aggregate"), format="json")
    ok = api.post(URL, body(api_slug="hourly", kind="aggregate", aggregate_period="hour"), format="json")

    assert missing.status_code == 400
    assert "aggregate_period" in missing.json()["errors"]
    assert ok.status_code == 201
    assert ok.json()["aggregate_period"] == "hour"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"api_slug": "bad slug!"}, "api_slug"),
        ({"api_slug": ""}, "api_slug"),
        ({"api_slug": "x" * 65}, "api_slug"),
        ({"dataschema": {"data": {"cpu": "Int32"}}}, "dataschema.data.cpu"),
        ({"dataschema": {"data": {"cpu": "Nullable(Nullable(Int64))"}}}, "dataschema.data.cpu"),
        ({"dataschema": {"data": {"Cpu": "Int64"}}}, "dataschema.data.Cpu"),
        ({"dataschema": {"data": {"1cpu": "Int64"}}}, "dataschema.data.1cpu"),
        ({"dataschema": {"data": {"cpu-hours": "Int64"}}}, "dataschema.data.cpu-hours"),
        ({"dataschema": {"data": {"a" * 64: "Int64"}}}, f"dataschema.data.{'a' * 64}"),
        ({"dataschema": {"data": {"timestamp": "Int64"}}}, "dataschema.data.timestamp"),
        ({"dataschema": {"customer_id": "Int64", "data": {}}}, "dataschema.customer_id"),
        ({"dataschema": {"timestamp": "Date32", "data": {}}}, "dataschema.timestamp"),
        ({"dataschema": {"data": ["cpu"]}}, "dataschema.data"),
        ({"dataschema": "String"}, "dataschema"),
        ({"kind": "sometimes"}, "kind"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_definitions_get_400_naming_the_field(api: APIClient, overrides: dict[str, Any], field: str) -> None:
    response = api.post(URL, body(**overrides), format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert field in response.json()["detail"], response.json()
    assert not UsageEvent.objects.exists()


def test_slug_taken_in_same_organisation_is_refused_but_fine_in_another(
    api: APIClient, other_organisation: Organisation, client_for: Any
) -> None:
    assert api.post(URL, body(), format="json").status_code == 201
    again = api.post(URL, body(name="Other"), format="json")
    other_api = client_for(api_key_make(organisation=other_organisation).secret)
    elsewhere = other_api.post(URL, body(), format="json")

    assert again.status_code == 400
    assert "already taken" in again.json()["errors"]["api_slug"][0]
    assert elsewhere.status_code == 201


def test_malformed_json_body_is_400(api: APIClient) -> None:
    response = api.post(URL, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_schema_may_gain_nullable_fields(api: APIClient, organisation: Organisation) -> None:
    api.post(URL, body(), format="json")
    response = api.patch(
        f"{URL}compute_hours/",
        {"dataschema": {"data": {"cpu_usage_hours": "Float64", "region": "Nullable(String)"}}, "reason": "regions"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    stored = UsageEvent.objects.get(organisation=organisation, api_slug="compute_hours")
    assert stored.dataschema["data"] == {"cpu_usage_hours": "Float64", "region": "Nullable(String)"}
    entry = AuditEntry.objects.get(action="usage_event.update")
    assert entry.reason == "regions"
    assert entry.before["dataschema"]["data"] == {"cpu_usage_hours": "Float64"}


@pytest.mark.parametrize(
    ("new_data", "words"),
    [
        ({"cpu_usage_hours": "Float64", "region": "String"}, "must be Nullable"),
        ({}, "cannot be removed"),
        ({"cpu_usage_hours": "Int64"}, "cannot change type"),
        ({"cpu_usage_hours": "Nullable(Float64)"}, "cannot change type"),
    ],
)
def test_other_schema_changes_get_409_with_the_reason(
    api: APIClient, organisation: Organisation, new_data: dict[str, str], words: str
) -> None:
    api.post(URL, body(), format="json")

    response = api.patch(f"{URL}compute_hours/", {"dataschema": {"data": new_data}}, format="json")

    assert response.status_code == 409
    assert words in response.json()["detail"]
    stored = UsageEvent.objects.get(organisation=organisation, api_slug="compute_hours")
    assert stored.dataschema["data"] == {"cpu_usage_hours": "Float64"}


def test_kind_cannot_change(api: APIClient) -> None:
    api.post(URL, body(), format="json")
    response = api.patch(f"{URL}compute_hours/", {"kind": "aggregate", "aggregate_period": "day"}, format="json")
    assert response.status_code == 409


def test_name_and_description_can_change(api: APIClient) -> None:
    api.post(URL, body(), format="json")
    response = api.patch(f"{URL}compute_hours/", {"name": "CPU hours", "description": "per VM"}, format="json")
    assert response.status_code == 200
    assert response.json()["name"] == "CPU hours"
    assert response.json()["description"] == "per VM"


def test_delete_archives_and_keeps_the_definition(api: APIClient, organisation: Organisation) -> None:
    api.post(URL, body(), format="json")

    response = api.delete(f"{URL}compute_hours/")

    assert response.status_code == 204
    stored = UsageEvent.objects.get(organisation=organisation, api_slug="compute_hours")
    assert stored.archived is True
    assert api.get(URL).json()["results"] == []
    assert [e["api_slug"] for e in api.get(URL, {"include_archived": "true"}).json()["results"]] == ["compute_hours"]
    assert api.get(f"{URL}compute_hours/").json()["archived"] is True
    assert AuditEntry.objects.filter(action="usage_event.archive", object_id="compute_hours").count() == 1


def test_list_is_cursor_paginated(api: APIClient, organisation: Organisation) -> None:
    for n in range(5):
        usage_event_make(organisation=organisation, api_slug=f"event_{n}")

    first = api.get(URL, {"page_size": 2}).json()
    second = api.get(first["next"])

    assert [e["api_slug"] for e in first["results"]] == ["event_0", "event_1"]
    assert second.status_code == 200
    assert [e["api_slug"] for e in second.json()["results"]] == ["event_2", "event_3"]


def test_a_key_never_sees_another_organisations_usage_events(
    api: APIClient, organisation: Organisation, other_organisation: Organisation
) -> None:
    usage_event_make(organisation=other_organisation, api_slug="secret_event")
    usage_event_make(organisation=organisation, api_slug="mine")

    listed = [e["api_slug"] for e in api.get(URL).json()["results"]]
    detail = api.get(f"{URL}secret_event/")
    patch = api.patch(f"{URL}secret_event/", {"name": "x"}, format="json")
    delete = api.delete(f"{URL}secret_event/")

    assert listed == ["mine"]
    assert detail.status_code == 404
    assert patch.status_code == 404
    assert delete.status_code == 404
    assert UsageEvent.objects.get(api_slug="secret_event").archived is False
