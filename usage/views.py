"""Dashboard pages for Usage > Usage events."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from usage.forms import UsageEventForm
from usage.schema import BASE_TYPES, dataschema_sample
from usage.selectors import usage_event_get, usage_events_list
from usage.services import usage_event_create
from zenskar_site.actors import Actor
from zenskar_site.dashboard import form_errors_apply, member_view
from zenskar_site.errors import NotFound, ValidationFailed

FORM_FIELDS = {
    "name": "name",
    "api_slug": "api_slug",
    "kind": "kind",
    "aggregate_period": "aggregate_period",
    "description": "description",
    "dataschema": "dataschema",
}


@member_view()
def usage_event_list(request: HttpRequest, actor: Actor) -> HttpResponse:
    events = usage_events_list(organisation=actor.organisation)
    return render(request, "usage/event_list.html", {"events": events})


@member_view(write=True)
def usage_event_new(request: HttpRequest, actor: Actor) -> HttpResponse:
    form = UsageEventForm(request.POST or None)
    field_errors: dict[str, list[str]] = {}
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            usage_event = usage_event_create(
                actor=actor,
                name=data["name"],
                api_slug=data["api_slug"],
                kind=data["kind"],
                aggregate_period=data["aggregate_period"] or None,
                description=data["description"],
                dataschema=data["dataschema"],
            )
        except ValidationFailed as exc:
            field_errors = {
                path.removeprefix("dataschema.data."): messages
                for path, messages in exc.errors.items()
                if path.startswith("dataschema.data.")
            }
            other = {p: m for p, m in exc.errors.items() if not p.startswith("dataschema.data.")}
            if other:
                form_errors_apply(form, ValidationFailed(other), fields=FORM_FIELDS)
        else:
            return redirect("usage:event-detail", api_slug=usage_event.api_slug)
    return render(
        request,
        "usage/event_form.html",
        {"form": form, "types": BASE_TYPES, "field_errors": field_errors},
    )


def curl_example(*, url: str, organisation_id: str, body: Mapping[str, object]) -> str:
    return "\n".join(
        [
            f"curl -X POST {shlex.quote(url)} \\",
            f'  -H "organisation: {organisation_id}" \\',
            '  -H "x-api-key: <your API key>" \\',
            '  -H "Content-Type: application/json" \\',
            f"  --data-raw {shlex.quote(json.dumps(body))}",
        ]
    )


@member_view()
def usage_event_detail(request: HttpRequest, actor: Actor, api_slug: str) -> HttpResponse:
    try:
        usage_event = usage_event_get(organisation=actor.organisation, api_slug=api_slug)
    except NotFound as exc:
        return render(request, "404.html", {"detail": exc.detail}, status=404)
    endpoint = request.build_absolute_uri(f"/usage/{usage_event.api_slug}")
    body = {
        "customer_id": "cus_123",
        "timestamp": "2026-11-20T14:03:12Z",
        "data": dataschema_sample(usage_event.dataschema),
    }
    return render(
        request,
        "usage/event_detail.html",
        {
            "event": usage_event,
            "endpoint": endpoint,
            "curl": curl_example(url=endpoint, organisation_id=str(actor.organisation.id), body=body),
            "schema_json": json.dumps(usage_event.dataschema, indent=2),
        },
    )
