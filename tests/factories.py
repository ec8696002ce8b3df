"""Factories for tests: they go through the services, so objects are built the way users build them."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User

from usage.models import UsageEvent
from usage.services import usage_event_create
from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import ApiKey, Organisation
from zenskar_site.accounts.services import api_key_create, organisation_create

_sequence = itertools.count(1)


@dataclass
class ApiKeyBundle:
    api_key: ApiKey
    secret: str


def organisation_make(
    *, name: str | None = None, admin_email: str | None = None, password: str = "pw-123456"
) -> Organisation:
    n = next(_sequence)
    organisation, _ = organisation_create(
        name=name or f"Org {n}", admin_email=admin_email or f"admin{n}@example.com", password=password
    )
    return organisation


def organisation_admin(organisation: Organisation) -> User:
    return User.objects.get(memberships__organisation=organisation, memberships__role="admin")


def api_key_make(*, organisation: Organisation, scope: str = "full", name: str = "test key") -> ApiKeyBundle:
    api_key, secret = api_key_create(actor=system_actor(organisation=organisation), name=name, scope=scope)
    return ApiKeyBundle(api_key=api_key, secret=secret)


def usage_event_make(
    *,
    organisation: Organisation,
    api_slug: str = "compute_hours",
    name: str = "Compute hours",
    data: dict[str, str] | None = None,
    kind: str = "event",
    aggregate_period: str | None = None,
    **extra: Any,
) -> UsageEvent:
    return usage_event_create(
        actor=system_actor(organisation=organisation),
        name=name,
        api_slug=api_slug,
        kind=kind,
        aggregate_period=aggregate_period,
        dataschema={"data": data if data is not None else {"cpu_usage_hours": "Float64", "region": "Nullable(String)"}},
        **extra,
    )
