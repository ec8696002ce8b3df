from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import ApiKeyBundle, api_key_make, organisation_make, usage_event_make
from zenskar_site.models import Organisation

IS_POSTGRES = bool(os.environ.get("DATABASE_URL"))


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL: runs in the PostgreSQL pass of `make test`")
    for item in items:
        if not IS_POSTGRES and ("postgres" in item.keywords or "celery_worker" in item.keywords):
            item.add_marker(skip_pg)


@pytest.fixture
def organisation(db: None) -> Organisation:
    return organisation_make(name="Acme")


@pytest.fixture
def other_organisation(db: None) -> Organisation:
    return organisation_make(name="Globex")


@pytest.fixture
def full_key(organisation: Organisation) -> ApiKeyBundle:
    return api_key_make(organisation=organisation, scope="full")


@pytest.fixture
def ingest_key(organisation: Organisation) -> ApiKeyBundle:
    return api_key_make(organisation=organisation, scope="ingest")


@pytest.fixture
def client_for() -> Callable[..., APIClient]:
    def make(secret: str | None, **headers: str) -> APIClient:
        client = APIClient()
        extra = {f"HTTP_{name.upper()}": value for name, value in headers.items()}
        if secret is not None:
            extra["HTTP_X_API_KEY"] = secret
        client.credentials(**extra)
        return client

    return make


@pytest.fixture
def api(full_key: ApiKeyBundle, client_for: Callable[..., APIClient]) -> APIClient:
    """A management-API client authenticated with a `full` key of `organisation`."""
    return client_for(full_key.secret)


@pytest.fixture
def compute_hours(organisation: Organisation) -> Any:
    return usage_event_make(organisation=organisation)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"
