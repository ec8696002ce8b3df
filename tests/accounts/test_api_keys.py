"""API keys: hashed storage, scopes, the organisation header, revocation, last use."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import ApiKeyBundle, api_key_make
from zenskar_site.accounts.models import ApiKey, AuditEntry, Membership, Organisation


def test_key_created_through_the_api_is_shown_once_and_works(api: APIClient, client_for: Any) -> None:
    created = api.post("/api/v1/api-keys/", {"name": "billing sync", "scope": "full"}, format="json")

    assert created.status_code == 201
    secret = created.json()["key"]
    assert secret.startswith("zk_")
    assert set(created.json()) == {"prefix", "name", "scope", "created_at", "last_used_at", "key"}
    listed = api.get("/api/v1/api-keys/").json()["results"]
    assert all("key" not in item for item in listed)
    assert created.json()["prefix"] in [item["prefix"] for item in listed]
    assert client_for(secret).get("/api/v1/organisation/").status_code == 200


def test_database_holds_no_key_in_clear(api: APIClient, full_key: ApiKeyBundle) -> None:
    secret = api.post("/api/v1/api-keys/", {"name": "x", "scope": "ingest"}, format="json").json()["key"]

    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                text = " ".join(str(value) for value in row)
                assert secret not in text, table
                assert full_key.secret not in text, table
    stored = ApiKey.objects.get(prefix=secret.split("_")[1])
    assert len(stored.key_hash) == 64


@pytest.mark.parametrize("header", ["HTTP_X_API_KEY", "HTTP_AUTHORIZATION"])
def test_key_accepted_in_either_header(full_key: ApiKeyBundle, header: str, organisation: Organisation) -> None:
    value = full_key.secret if header == "HTTP_X_API_KEY" else f"Bearer {full_key.secret}"
    client = APIClient()
    client.credentials(**{header: value})

    response = client.get("/api/v1/organisation/")

    assert response.status_code == 200
    assert response.json() == {"id": str(organisation.id), "name": "Acme"}


def test_missing_or_unknown_key_is_401(client_for: Any, full_key: ApiKeyBundle) -> None:
    tampered = full_key.secret[:-2] + ("aa" if not full_key.secret.endswith("aa") else "bb")
    for secret in (None, "nonsense", "zk_abcdefghijkl_nope", tampered):
        response = client_for(secret).get("/api/v1/usage-events/")
        assert response.status_code == 401, secret
        assert response.json()["detail"]


def test_matching_organisation_header_is_accepted(
    client_for: Any, full_key: ApiKeyBundle, organisation: Organisation
) -> None:
    response = client_for(full_key.secret, organisation=str(organisation.id)).get("/api/v1/usage-events/")
    assert response.status_code == 200


@pytest.mark.parametrize("which", ["other", "garbage"])
def test_mismatched_organisation_header_is_403(
    client_for: Any, full_key: ApiKeyBundle, other_organisation: Organisation, which: str
) -> None:
    header = str(other_organisation.id) if which == "other" else "not-a-uuid"
    response = client_for(full_key.secret, organisation=header).get("/api/v1/usage-events/")
    assert response.status_code == 403
    assert "organisation" in response.json()["detail"]


def test_ingest_scope_key_is_403_on_the_management_api(client_for: Any, ingest_key: ApiKeyBundle) -> None:
    client = client_for(ingest_key.secret)
    for method, url in [("get", "/api/v1/usage-events/"), ("post", "/api/v1/api-keys/"), ("get", "/api/v1/audit/")]:
        response = getattr(client, method)(url, {}, format="json")
        assert response.status_code == 403, url
        assert "scope" in response.json()["detail"]


def test_revoked_key_is_401_on_its_very_next_request(
    api: APIClient, client_for: Any, organisation: Organisation
) -> None:
    doomed = api_key_make(organisation=organisation, name="doomed")
    doomed_client = client_for(doomed.secret)
    assert doomed_client.get("/api/v1/organisation/").status_code == 200

    revoked = api.delete(f"/api/v1/api-keys/{doomed.api_key.prefix}/")

    assert revoked.status_code == 204
    after = doomed_client.get("/api/v1/organisation/")
    assert after.status_code == 401
    assert "revoked" in after.json()["detail"]
    assert AuditEntry.objects.filter(action="api_key.revoke", object_id=doomed.api_key.prefix).count() == 1


def test_a_key_cannot_revoke_another_organisations_key(api: APIClient, other_organisation: Organisation) -> None:
    foreign = api_key_make(organisation=other_organisation)
    response = api.delete(f"/api/v1/api-keys/{foreign.api_key.prefix}/")
    assert response.status_code == 404
    foreign.api_key.refresh_from_db()
    assert foreign.api_key.revoked_at is None


def test_last_used_time_is_recorded(api: APIClient, full_key: ApiKeyBundle) -> None:
    assert full_key.api_key.last_used_at is None
    api.get("/api/v1/organisation/")
    full_key.api_key.refresh_from_db()
    assert full_key.api_key.last_used_at is not None


def test_bad_key_creation_names_the_field(api: APIClient) -> None:
    response = api.post("/api/v1/api-keys/", {"name": "", "scope": "root"}, format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"name", "scope"}


def test_createapikey_prints_the_key_alone_on_its_last_line(organisation: Organisation, client_for: Any) -> None:
    out = io.StringIO()
    call_command("createapikey", "--organisation", "Acme", "--scope", "ingest", stdout=out)

    secret = out.getvalue().strip().splitlines()[-1]
    assert secret.startswith("zk_")
    assert " " not in secret
    assert ApiKey.objects.get(prefix=secret.split("_")[1]).scope == "ingest"


def test_createorganisation_creates_the_organisation_and_its_first_admin(db: None) -> None:
    call_command(
        "createorganisation",
        "Initech",
        "--admin-email",
        "boss@initech.test",
        "--password",
        "s3cret-pass",
        stdout=io.StringIO(),
    )

    membership = Membership.objects.get(organisation__name="Initech")
    assert membership.role == "admin"
    assert membership.user.check_password("s3cret-pass")
    assert membership.user.is_staff


def test_session_viewer_can_read_but_not_write(organisation: Organisation, django_user_model: Any) -> None:
    viewer = django_user_model.objects.create_user(username="viewer@acme.test", password="pw-123456")
    Membership.objects.create(user=viewer, organisation=organisation, role="viewer")
    client = APIClient()
    client.force_login(viewer)

    assert client.get("/api/v1/usage-events/").status_code == 200
    response = client.post("/api/v1/api-keys/", {"name": "x", "scope": "full"}, format="json")
    assert response.status_code == 403
    assert not ApiKey.objects.filter(name="x").exists()
