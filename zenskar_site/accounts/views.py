"""Dashboard pages for the organisation switcher and Settings > API keys."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.dashboard import form_errors_apply, member_view
from zenskar_site.accounts.models import ApiKeyScope
from zenskar_site.accounts.selectors import (
    SESSION_ORGANISATION_KEY,
    api_keys_list,
    audit_entries_list,
    memberships_for_user,
)
from zenskar_site.accounts.services import api_key_create, api_key_revoke
from zenskar_site.lib.errors import DomainError, ValidationFailed

CREATED_SECRET_SESSION_KEY = "created_api_key_secret"


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, label="Name")
    scope = forms.ChoiceField(choices=ApiKeyScope.choices, initial=ApiKeyScope.INGEST, label="Scope")


@member_view()
def home(request: HttpRequest, actor: Actor) -> HttpResponse:
    return redirect("usage:event-list")


@require_POST
@member_view()
def organisation_switch(request: HttpRequest, actor: Actor) -> HttpResponse:
    chosen = request.POST.get("organisation_id", "")
    if any(str(m.organisation_id) == chosen for m in memberships_for_user(user=request.user)):
        request.session[SESSION_ORGANISATION_KEY] = chosen
    else:
        messages.error(request, "You are not a member of that organisation.")
    next_url = request.POST.get("next") or "/"
    return HttpResponseRedirect(next_url if next_url.startswith("/") and not next_url.startswith("//") else "/")


@member_view(write=True)
def api_keys(request: HttpRequest, actor: Actor) -> HttpResponse:
    # The secret travels to the next GET in the session and is removed as it is shown: a reload
    # neither shows it again nor re-sends the POST that created it.
    created_secret = request.session.pop(CREATED_SECRET_SESSION_KEY, None)
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            _api_key, secret = api_key_create(
                actor=actor, name=form.cleaned_data["name"], scope=form.cleaned_data["scope"]
            )
        except ValidationFailed as exc:
            form_errors_apply(form, exc, fields={"name": "name", "scope": "scope"})
        else:
            request.session[CREATED_SECRET_SESSION_KEY] = secret
            return redirect("api-keys")
    return render(
        request,
        "zenskar_site/api_keys.html",
        {
            "form": form,
            "keys": api_keys_list(organisation=actor.organisation),
            "created_secret": created_secret,
            "audit": list(audit_entries_list(organisation=actor.organisation).filter(object_type="api_key")[:20]),
        },
    )


@require_POST
@member_view(write=True)
def api_key_revoke_view(request: HttpRequest, actor: Actor, prefix: str) -> HttpResponse:
    try:
        api_key_revoke(actor=actor, prefix=prefix)
        messages.success(request, f"API key {prefix} revoked. It stops working on its next request.")
    except DomainError as exc:
        messages.error(request, exc.detail)
    return redirect("api-keys")
