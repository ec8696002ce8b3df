"""The Django admin for billing, scoped to the organisation like the rest.

Every add and edit goes through the same services as the API (validation, audit trail). The form runs
the service once in a savepoint that is rolled back, so that a refusal shows on the form against its
field; `save_model` then runs it for real.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.catalogue import plan_create, plan_update, pricing_create, product_create, product_update
from billing.contracts import (
    contract_create,
    contract_expire,
    contract_phase_create,
    contract_phase_pricing_add,
    contract_resume,
    contract_update,
)
from billing.customers import CUSTOMER_FIELDS, customer_create, customer_update
from billing.models import Contract, ContractPhase, Customer, PhasePricing, Plan, PlanPricing, Pricing, Product
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.admin_scoping import OrganisationScopedAdmin, ShownInline, admin_actor, organisation_ids
from zenskar_site.accounts.models import Organisation
from zenskar_site.lib.errors import DomainError, ValidationFailed


class _DryRun(Exception):
    pass


def plain(value: Any) -> Any:
    """A form value as the JSON a client would send: decimals as text, dates in ISO 8601, rows by id."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, models.Model):
        return str(value.pk)
    return value


class ServiceForm(forms.ModelForm):
    """A model form whose writes go through a service; set by ServiceAdmin.get_form."""

    request: HttpRequest
    service_admin: ServiceAdmin

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            with transaction.atomic():
                self.service_admin.run(self.request, self)
                raise _DryRun
        except _DryRun:
            pass
        except ValidationFailed as exc:
            for path, problems in exc.errors.items():
                name = path.split(".")[0].split("[")[0]
                field = name if name in self.fields else None
                for problem in problems:
                    self.add_error(field, problem if field == path else f"{path}: {problem}")
        except DomainError as exc:
            self.add_error(None, exc.detail)
        return cleaned

    def _post_clean(self) -> None:
        # The service validates (and the database enforces); the model's own full_clean would refuse an
        # add before the organisation is known.
        pass


class ServiceAdmin(OrganisationScopedAdmin):
    """Adds and edits through services. Subclasses name the fields the API takes (`api_fields`)."""

    api_fields: tuple[str, ...] = ()
    form = ServiceForm

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_change_permission(request)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change=change, **kwargs)
        form_class.request = request  # type: ignore[attr-defined]
        form_class.service_admin = self  # type: ignore[attr-defined]
        return form_class

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        related = db_field.related_model
        if not request.user.is_superuser:
            if related is Organisation:
                kwargs["queryset"] = Organisation.objects.filter(id__in=organisation_ids(request, admin_only=True))
            elif any(f.name == "organisation" for f in related._meta.get_fields()):
                kwargs["queryset"] = related._default_manager.filter(organisation_id__in=organisation_ids(request))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def actor_for(self, request: HttpRequest, form: ServiceForm) -> Actor:
        instance = form.instance
        if instance.pk is not None and not instance._state.adding:
            return admin_actor(request, instance.organisation)
        organisation = form.cleaned_data.get("organisation")
        if organisation is None:
            raise ValidationFailed({"organisation": ["Choose the organisation."]})
        return admin_actor(request, organisation)

    def data_of(self, form: ServiceForm, *, adding: bool) -> dict[str, Any]:
        names = [n for n in self.api_fields if n in form.cleaned_data and (adding or n in form.changed_data)]
        return {name: plain(form.cleaned_data[name]) for name in names}

    def run(self, request: HttpRequest, form: ServiceForm) -> Any:
        actor = self.actor_for(request, form)
        adding = form.instance._state.adding
        data = self.data_of(form, adding=adding)
        if adding:
            return self.create(actor, data)
        return self.update(actor, form.instance.pk, data)

    def create(self, actor: Actor, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def update(self, actor: Actor, pk: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        try:
            saved = self.run(request, form)
        except DomainError as exc:  # validated in the form already; a concurrent change may still land here
            messages.error(request, exc.detail)
            return
        # The admin logs, shows and redirects to `obj`: make it the row the service wrote.
        for field in obj._meta.concrete_fields:
            setattr(obj, field.attname, getattr(saved, field.attname))
        obj._state.adding = False
        obj._state.db = saved._state.db

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Related rows change through the services only; the inlines are read-only, so this writes
        # nothing, but it lets the admin's change message read what each formset saved (nothing).
        for formset in formsets:
            formset.save(commit=False)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            readonly.append("organisation")
        return readonly


@admin.register(Customer)
class CustomerAdmin(ServiceAdmin):
    api_fields = CUSTOMER_FIELDS
    list_display = ["customer_name", "external_id", "organisation", "email", "archived", "created_at"]
    list_filter = ["archived"]
    search_fields = ["customer_name", "=external_id", "email"]
    fields = ["organisation", *CUSTOMER_FIELDS, "archived"]
    readonly_fields = ["archived"]

    def create(self, actor: Actor, data: dict[str, Any]) -> Any:
        return customer_create(actor=actor, data=data)

    def update(self, actor: Actor, pk: Any, data: dict[str, Any]) -> Any:
        return customer_update(actor=actor, customer_id=pk, changes=data, reason="edited in the admin")


class PricingInline(ShownInline):
    model = Pricing
    fields = (
        "name",
        "pricing_type",
        "pricing_data",
        "quantity_type",
        "metric",
        "quantity",
        "cadence",
        "currency",
    )
    readonly_fields = fields
    show_change_link = True


@admin.register(Product)
class ProductAdmin(ServiceAdmin):
    api_fields = ("name", "sku", "description", "type", "is_active", "tax_codes", "custom_attributes")
    list_display = ["name", "sku", "organisation", "type", "is_active", "created_at"]
    list_filter = ["type", "is_active"]
    search_fields = ["name", "=sku"]
    fields = ["organisation", *api_fields]
    inlines = [PricingInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*super().get_readonly_fields(request, obj), *(["type"] if obj is not None else [])]

    def create(self, actor: Actor, data: dict[str, Any]) -> Any:
        return product_create(actor=actor, data=data)

    def update(self, actor: Actor, pk: Any, data: dict[str, Any]) -> Any:
        return product_update(actor=actor, product_id=pk, changes=data, reason="edited in the admin")


class PricingForm(ServiceForm):
    quantity_json = forms.JSONField(
        required=False,
        label="Quantity",
        help_text='{"type": "metered", "aggregate_id": "<metric slug>"} or {"type": "fixed", "quantity": 1}',
    )
    billing_cadence = forms.CharField(initial="P1M", label="Billing cadence", help_text="P1D, P1W, P1M, P3M, P6M, P1Y")


@admin.register(Pricing)
class PricingAdmin(ServiceAdmin):
    """Pricings are added (through the service) and never edited: contracts and invoices refer to them."""

    organisation_path = "organisation"
    form = PricingForm
    list_display = ["__str__", "organisation", "pricing_type", "quantity_type", "metric", "cadence", "currency"]
    list_filter = ["pricing_type", "quantity_type", "cadence"]
    list_select_related = ["product", "metric", "organisation"]
    search_fields = ["name", "product__name"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [
                "organisation",
                "product",
                "name",
                "description",
                "pricing_data",
                "quantity_json",
                "billing_cadence",
                "is_recurring",
                "currency",
            ]
        return [
            "organisation",
            "product",
            "name",
            "description",
            "pricing_type",
            "pricing_data",
            "quantity_type",
            "metric",
            "quantity",
            "unit",
            "label",
            "cadence",
            "is_recurring",
            "currency",
            "created_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.get_fields(request, obj) if obj is not None else []

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_change_permission(request)

    def run(self, request: HttpRequest, form: ServiceForm) -> Any:
        actor = self.actor_for(request, form)
        data = {
            "name": form.cleaned_data.get("name") or "",
            "description": form.cleaned_data.get("description") or "",
            "pricing_data": form.cleaned_data.get("pricing_data"),
            "billing_period": {"cadence": form.cleaned_data.get("billing_cadence") or "P1M"},
            "is_recurring": bool(form.cleaned_data.get("is_recurring")),
            "currency": form.cleaned_data.get("currency") or None,
        }
        if form.cleaned_data.get("quantity_json") is not None:
            data["quantity"] = form.cleaned_data["quantity_json"]
        product = form.cleaned_data.get("product")
        if product is None:
            raise ValidationFailed({"product": ["Choose the product."]})
        return pricing_create(actor=actor, product_id=product.pk, data=data)


class PlanPricingInline(ShownInline):
    model = PlanPricing
    fields = (
        "pricing",
        "position",
    )
    readonly_fields = fields


class PlanForm(ServiceForm):
    add_pricings = forms.ModelMultipleChoiceField(
        queryset=Pricing.objects.none(), required=False, help_text="Pricings to add to the plan."
    )


@admin.register(Plan)
class PlanAdmin(ServiceAdmin):
    api_fields = ("name", "description", "currency", "status", "custom_attributes")
    form = PlanForm
    list_display = ["name", "organisation", "currency", "status", "created_at"]
    list_filter = ["status", "currency"]
    search_fields = ["name"]
    fields = ["organisation", *api_fields, "add_pricings"]
    inlines = [PlanPricingInline]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change=change, **kwargs)
        pricings = Pricing.objects.select_related("product")
        if obj is not None:
            pricings = pricings.filter(organisation_id=obj.organisation_id)
        elif not request.user.is_superuser:
            pricings = pricings.filter(organisation_id__in=organisation_ids(request, admin_only=True))
        form_class.base_fields["add_pricings"].queryset = pricings
        return form_class

    def data_of(self, form: ServiceForm, *, adding: bool) -> dict[str, Any]:
        data = super().data_of(form, adding=adding)
        added = form.cleaned_data.get("add_pricings")
        if added:
            data["pricing_ids"] = [str(p.pk) for p in added]
        return data

    def create(self, actor: Actor, data: dict[str, Any]) -> Any:
        return plan_create(actor=actor, data=data)

    def update(self, actor: Actor, pk: Any, data: dict[str, Any]) -> Any:
        return plan_update(actor=actor, plan_id=pk, changes=data, reason="edited in the admin")


class PhaseInline(ShownInline):
    model = ContractPhase
    fields = (
        "name",
        "phase_type",
        "start_date",
        "end_date",
    )
    readonly_fields = fields
    show_change_link = True


@admin.register(Contract)
class ContractAdmin(ServiceAdmin):
    """Contracts are added with their terms (phases and pricings then, below), edited, resumed or expired,
    through the same services as the API."""

    api_fields = (
        "name",
        "description",
        "status",
        "currency",
        "start_date",
        "end_date",
        "anchor_date",
        "renewal_policy",
        "custom_attributes",
    )
    list_display = ["name", "customer", "organisation", "status", "currency", "start_date", "end_date"]
    list_filter = ["status", "currency", "renewal_policy"]
    list_select_related = ["customer", "organisation"]
    search_fields = ["name", "customer__customer_name", "=customer__external_id"]
    inlines = [PhaseInline]
    actions = ["resume_selected", "expire_today"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["organisation", "customer", *self.api_fields]
        return ["organisation", "customer", *self.api_fields, "expiry_date", "plan"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return []
        return ["organisation", "customer", "expiry_date", "plan"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change=change, **kwargs)
        form_class.base_fields["anchor_date"].required = False  # the start date when left empty
        form_class.base_fields["anchor_date"].help_text = "Billing periods step from this day; empty: the start date."
        return form_class

    def data_of(self, form: ServiceForm, *, adding: bool) -> dict[str, Any]:
        data = super().data_of(form, adding=adding)
        if adding:
            customer = form.cleaned_data.get("customer")
            data["customer_id"] = str(customer.pk) if customer is not None else None
        return data

    def create(self, actor: Actor, data: dict[str, Any]) -> Any:
        return contract_create(actor=actor, data=data)

    def update(self, actor: Actor, pk: Any, data: dict[str, Any]) -> Any:
        return contract_update(actor=actor, contract_id=pk, changes=data, reason="edited in the admin")

    def _each(self, request: HttpRequest, queryset: QuerySet[Contract], action: Any, verb: str) -> None:
        done = 0
        for contract in queryset.select_related("organisation")[:500]:
            try:
                action(
                    actor=admin_actor(request, contract.organisation),
                    contract_id=contract.pk,
                    reason=f"{verb} in the admin",
                )
                done += 1
            except DomainError as exc:
                messages.error(request, f"{contract.name}: {exc.detail}")
        messages.success(request, f"{done} contract(s) {verb}.")

    @admin.action(description="Resume selected paused contracts today", permissions=["change"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[Contract]) -> None:
        self._each(request, queryset, contract_resume, "resumed")

    @admin.action(description="Expire selected contracts today", permissions=["change"])
    def expire_today(self, request: HttpRequest, queryset: QuerySet[Contract]) -> None:
        self._each(request, queryset, contract_expire, "expired")


class PhasePricingInline(ShownInline):
    model = PhasePricing
    fields = (
        "pricing",
        "start_date",
        "end_date",
        "anchor_date",
        "external_id",
    )
    readonly_fields = fields


class ContractChildAdmin(ServiceAdmin):
    """Phases and phase pricings: added through the contract services (validated against the contract's
    dates and currency, an amendment in its audit trail), shown read-only afterwards."""

    add_fields: tuple[str, ...] = ()
    shown_fields: tuple[str, ...] = ()

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return list(self.add_fields if obj is None else self.shown_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if obj is None else list(self.shown_fields)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_change_permission(request)

    def contract_actor(self, request: HttpRequest, contract: Contract | None) -> Actor:
        # The dropdowns list the member's organisations; only those where they are an admin may change.
        if contract is None:
            raise ValidationFailed({"contract": ["Choose the contract."]})
        if not request.user.is_superuser and contract.organisation_id not in organisation_ids(request, admin_only=True):
            raise ValidationFailed({"contract": ["Only an admin of the contract's organisation may change it."]})
        return admin_actor(request, contract.organisation)

    def form_data(self, form: ServiceForm, names: tuple[str, ...]) -> dict[str, Any]:
        return {
            name: plain(form.cleaned_data.get(name)) for name in names if form.cleaned_data.get(name) not in (None, "")
        }


@admin.register(ContractPhase)
class ContractPhaseAdmin(ContractChildAdmin):
    list_display = ["name", "contract", "organisation", "phase_type", "start_date", "end_date"]
    list_filter = ["phase_type"]
    list_select_related = ["contract", "organisation"]
    add_fields = ("contract", "name", "description", "phase_type", "start_date", "end_date")
    shown_fields = ("organisation", "contract", "name", "description", "phase_type", "start_date", "end_date")
    inlines = [PhasePricingInline]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change=change, **kwargs)
        if obj is None:
            form_class.base_fields["start_date"].required = False
            form_class.base_fields[
                "start_date"
            ].help_text = "Empty: when the previous phase ends (or the contract starts)."
        return form_class

    def run(self, request: HttpRequest, form: ServiceForm) -> Any:
        contract = form.cleaned_data.get("contract")
        actor = self.contract_actor(request, contract)
        assert contract is not None
        data = self.form_data(form, ("name", "description", "phase_type", "start_date", "end_date"))
        return contract_phase_create(actor=actor, contract_id=contract.pk, data=data, reason="added in the admin")


@admin.register(PhasePricing)
class PhasePricingAdmin(ContractChildAdmin):
    list_display = ["__str__", "phase", "pricing", "organisation", "start_date", "end_date"]
    list_select_related = ["phase", "pricing__product", "organisation"]
    add_fields = ("phase", "pricing", "start_date", "end_date", "anchor_date", "external_id", "description")
    shown_fields = ("organisation", *add_fields)

    def run(self, request: HttpRequest, form: ServiceForm) -> Any:
        phase = form.cleaned_data.get("phase")
        if phase is None:
            raise ValidationFailed({"phase": ["Choose the phase."]})
        actor = self.contract_actor(request, phase.contract)
        pricing = form.cleaned_data.get("pricing")
        data = self.form_data(form, ("start_date", "end_date", "anchor_date", "external_id", "description"))
        data["pricing_id"] = str(pricing.pk) if pricing is not None else None
        return contract_phase_pricing_add(
            actor=actor, contract_id=phase.contract_id, phase_id=phase.pk, data=data, reason="added in the admin"
        )


# Invoices, credit notes and payments: registered by their own module.
import billing.invoicing.admin  # noqa: E402, F401
