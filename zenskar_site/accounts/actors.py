"""Who is acting: a dashboard user (with a role) or an API key (with a scope), in one organisation."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User

from zenskar_site.accounts.models import ApiKey, ApiKeyScope, Organisation, Role


@dataclass(frozen=True)
class Actor:
    organisation: Organisation
    user: User | None = None
    api_key: ApiKey | None = None
    role: str = Role.VIEWER

    @property
    def label(self) -> str:
        if self.api_key is not None:
            return f"api_key:{self.api_key.prefix}"
        if self.user is not None:
            return f"user:{self.user.get_username()}"
        return "system"

    @property
    def can_write(self) -> bool:
        if self.api_key is not None:
            return self.api_key.scope == ApiKeyScope.FULL
        if self.user is None:
            return True  # operators' management commands
        return self.role == Role.ADMIN


def system_actor(*, organisation: Organisation) -> Actor:
    return Actor(organisation=organisation, role=Role.ADMIN)
