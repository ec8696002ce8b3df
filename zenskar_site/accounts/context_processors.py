from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from zenskar_site.accounts.selectors import actor_for_session, memberships_for_user


def organisation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    actor = actor_for_session(request=request)
    return {
        "actor": actor,
        "current_organisation": actor.organisation if actor else None,
        "memberships": list(memberships_for_user(user=user)),
    }
