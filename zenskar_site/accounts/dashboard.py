"""Shared pieces of the dashboard's views: the acting member and the write guard."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.selectors import actor_for_session
from zenskar_site.lib.errors import ValidationFailed

View = Callable[..., HttpResponse]


def member_view(*, write: bool = False) -> Callable[[View], View]:
    """Signed-in member of an organisation; `write` views need the admin role."""

    def decorator(view: View) -> View:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            actor = actor_for_session(request=request)
            if actor is None:
                raise PermissionDenied("Your account does not belong to any organisation.")
            if write and request.method == "POST" and not actor.can_write:
                raise PermissionDenied("Viewers cannot change anything; ask an admin of the organisation.")
            return view(request, actor, *args, **kwargs)

        return wrapper

    return decorator


def form_errors_apply(form: Any, exc: ValidationFailed, *, fields: dict[str, str]) -> None:
    """Put a service's field errors next to the form fields they belong to."""
    for path, messages in exc.errors.items():
        target = next(
            (field for prefix, field in fields.items() if path == prefix or path.startswith(prefix + ".")), None
        )
        for message in messages:
            form.add_error(target, f"{path}: {message}" if target and path != target else message)


def actor_required(actor: Actor | None) -> Actor:
    if actor is None:
        raise PermissionDenied("Your account does not belong to any organisation.")
    return actor
