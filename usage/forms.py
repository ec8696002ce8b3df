from __future__ import annotations

import json
from typing import Any

from django import forms

from usage.models import Period, UsageEventKind


class UsageEventForm(forms.Form):
    name = forms.CharField(label="Usage Event Name", max_length=200)
    api_slug = forms.CharField(
        label="API Slug Endpoint",
        max_length=64,
        help_text="Letters, digits, _ and -. Derived from the name; you can edit it.",
    )
    kind = forms.ChoiceField(label="Kind", choices=UsageEventKind.choices, initial=UsageEventKind.EVENT)
    aggregate_period = forms.ChoiceField(label="Aggregate period", choices=[("", "—"), *Period.choices], required=False)
    description = forms.CharField(label="Description", widget=forms.Textarea(attrs={"rows": 2}), required=False)
    dataschema = forms.CharField(label="Your Data Schema", widget=forms.HiddenInput, required=False)

    def clean_dataschema(self) -> Any:
        text = self.cleaned_data.get("dataschema") or '{"data": {}}'
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise forms.ValidationError("The data schema is not valid JSON.") from None
