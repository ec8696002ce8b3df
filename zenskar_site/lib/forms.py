"""Form fields the dashboard's pages share."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.utils import timezone


class UtcDateTimeField(forms.DateTimeField):
    """A `datetime-local` input: the browser sends no zone, the page says UTC, so it is read as UTC."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S")

    def to_python(self, value: Any) -> dt.datetime | None:
        with timezone.override(dt.UTC):
            return super().to_python(value)
