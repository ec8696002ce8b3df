"""Dashboard corrections of records: edit, void, restore (one record) and void by filter."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from usage.corrections import record_restore, record_update, record_void, records_void_by_filter
from usage.schema import InvalidValue, datetime_format, datetime_parse
from usage.selectors import record_get, usage_event_get
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.dashboard import member_view
from zenskar_site.accounts.selectors import audit_entries_list
from zenskar_site.lib.errors import DomainError, NotFound, ValidationFailed
from zenskar_site.lib.pages import not_found_page


class RecordEditForm(forms.Form):
    customer_id = forms.CharField(max_length=255, label="Customer ID")
    timestamp = forms.CharField(label="Timestamp", help_text="ISO 8601 with an offset, e.g. 2026-11-20T14:03:12Z.")
    data = forms.CharField(label="Data (JSON)", widget=forms.Textarea(attrs={"rows": 6, "class": "mono"}))  # type: ignore[assignment]
    reason = forms.CharField(label="Reason", required=False, help_text="Kept in the audit trail.")

    def clean_data(self) -> Any:
        try:
            value = json.loads(self.cleaned_data["data"])
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} at line {exc.lineno}.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("The data is a JSON object.")
        return value


@member_view(write=True)
def record_edit(request: HttpRequest, actor: Actor, api_slug: str, record_id: int) -> HttpResponse:
    try:
        usage_event = usage_event_get(organisation=actor.organisation, api_slug=api_slug)
        record = record_get(usage_event=usage_event, record_id=record_id)
    except NotFound as exc:
        return not_found_page(request, exc)
    initial = {
        "customer_id": record.customer_id,
        "timestamp": datetime_format(record.timestamp),
        "data": json.dumps(record.data, indent=2),
    }
    form = RecordEditForm(request.POST or None, initial=initial)
    if request.method == "POST":
        action = request.POST.get("action", "save")
        reason = request.POST.get("reason", "")
        try:
            if action == "void":
                record_void(actor=actor, api_slug=api_slug, record_id=record_id, reason=reason)
                messages.success(request, f"Record {record_id} voided: no metric counts it now.")
                return redirect(request.path)
            if action == "restore":
                record_restore(actor=actor, api_slug=api_slug, record_id=record_id, reason=reason)
                messages.success(request, f"Record {record_id} restored.")
                return redirect(request.path)
            if form.is_valid():
                changes = {
                    "customer_id": form.cleaned_data["customer_id"],
                    "timestamp": form.cleaned_data["timestamp"],
                    "data": {**dict.fromkeys(record.data), **form.cleaned_data["data"]},
                }
                record_update(actor=actor, api_slug=api_slug, record_id=record_id, changes=changes, reason=reason)
                messages.success(request, f"Record {record_id} saved; its metrics are being recomputed.")
                return redirect(request.path)
        except ValidationFailed as exc:
            for path, problems in exc.errors.items():
                field = path.split(".")[0] if path.split(".")[0] in form.fields else None
                for problem in problems:
                    form.add_error(field, f"{path}: {problem}" if path else problem)
        except DomainError as exc:
            messages.error(request, exc.detail)
    history = audit_entries_list(organisation=actor.organisation).filter(
        object_type="usage_record", object_id=str(record.id)
    )
    return render(
        request,
        "usage/record_edit.html",
        {"event": usage_event, "record": record, "form": form, "history": history[:50]},
    )


def _moment(value: str, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        return datetime_parse(value if "T" not in value or value.endswith("Z") or "+" in value else value + "Z")
    except InvalidValue as exc:
        raise ValidationFailed({name: [str(exc)]}) from None


@member_view(write=True)
def records_void_view(request: HttpRequest, actor: Actor, api_slug: str) -> HttpResponse:
    """POST from the usage event page: void every record matching its current filters."""
    back = reverse("usage:event-detail", args=[api_slug])
    if request.method != "POST":
        return redirect(back)
    try:
        voided = records_void_by_filter(
            actor=actor,
            api_slug=api_slug,
            customer_id=request.POST.get("customer") or None,
            start=_moment(request.POST.get("start", ""), "from"),
            end=_moment(request.POST.get("end", ""), "to"),
            reason=request.POST.get("reason", ""),
        )
        messages.success(request, f"{voided} record(s) voided.")
    except DomainError as exc:
        messages.error(request, exc.detail)
    return redirect(back)
