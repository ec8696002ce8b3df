"""Writes for customers: create, edit, archive; every change is an entry in the audit trail."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, models, transaction

from billing.inputs import Fields, uuid_value
from billing.models import Customer
from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.services import audit_record
from zenskar_site.lib.errors import Conflict, NotFound, ValidationFailed

ADDRESS_PARTS = ("line1", "line2", "line3", "city", "state", "zipCode", "country", "country_code")
# Every text field a client may set, with its maximum length (the model's).
ADDRESS_LENGTHS = {"zipCode": 64, "country_code": 8}
CUSTOMER_TEXT_FIELDS: dict[str, int] = {
    "customer_name": 255,
    "email": 254,
    "phone_number": 64,
    **{f"{side}_{part}": ADDRESS_LENGTHS.get(part, 255) for side in ("address", "ship_to") for part in ADDRESS_PARTS},
}
CUSTOMER_FIELDS = ("external_id", *CUSTOMER_TEXT_FIELDS, "tax_rate", "payment_terms_days", "custom_data")
TAX_RATE_MAX = Decimal(100)


def json_ready(value: Any) -> Any:
    """A model value as JSON for the audit trail: decimals as strings, dates in ISO 8601, ids as text."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # the same text before and after a round trip to the database
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, models.Model):
        return str(value.pk)
    return value


def snapshot(obj: models.Model, fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: json_ready(getattr(obj, name)) for name in fields}


def customer_snapshot(customer: Customer) -> dict[str, Any]:
    return {"id": str(customer.id), **snapshot(customer, CUSTOMER_FIELDS), "archived": customer.archived}


def _read(fields: Fields, *, creating: bool) -> dict[str, Any]:
    """The clean values of the fields present (all of them when creating)."""
    clean: dict[str, Any] = {}
    if creating or fields.has("external_id"):
        clean["external_id"] = fields.identifier("external_id")
    for name, max_length in CUSTOMER_TEXT_FIELDS.items():
        if creating or fields.has(name):
            required = name == "customer_name"
            if not creating and required and fields.get(name) is None:
                fields.fail(name, "A customer needs a name.")
                continue
            clean[name] = fields.text(name, max_length=max_length, required=required)
    if creating or fields.has("tax_rate"):
        clean["tax_rate"] = fields.decimal(
            "tax_rate", default=Decimal(0), minimum=Decimal(0), maximum=TAX_RATE_MAX, places=4
        )
    if creating or fields.has("payment_terms_days"):
        clean["payment_terms_days"] = fields.integer("payment_terms_days", default=30, minimum=0, maximum=3650)
    if creating or fields.has("custom_data"):
        clean["custom_data"] = fields.json_object("custom_data")
    return clean


def _external_id_taken(external_id: str) -> ValidationFailed:
    return ValidationFailed(
        {"external_id": [f"A customer with external id {external_id!r} already exists in this organisation."]}
    )


@transaction.atomic
def customer_create(*, actor: Actor, data: Mapping[str, Any]) -> Customer:
    fields = Fields(data)
    fields.refuse_unknown(CUSTOMER_FIELDS)
    clean = _read(fields, creating=True)
    external_id = clean.get("external_id")
    if external_id and Customer.objects.filter(organisation=actor.organisation, external_id=external_id).exists():
        fields.errors.update(_external_id_taken(external_id).errors)
    fields.raise_if_errors()
    try:
        with transaction.atomic():
            customer = Customer.objects.create(organisation=actor.organisation, **clean)
    except IntegrityError:  # a concurrent create took the external id between the check and the insert
        raise _external_id_taken(str(external_id)) from None
    audit_record(
        actor=actor,
        action="customer.create",
        object_type="customer",
        object_id=str(customer.id),
        after=customer_snapshot(customer),
    )
    return customer


def customer_locked(*, actor: Actor, customer_id: Any) -> Customer:
    """The organisation's customer, locked for the transaction; another organisation's id is not found."""
    key = uuid_value(customer_id)
    customer = (
        Customer.objects.select_for_update().filter(organisation=actor.organisation, id=key).first()
        if key is not None
        else None
    )
    if customer is None:
        raise NotFound(f"No customer with id {str(customer_id)[:100]!r} in this organisation.")
    return customer


@transaction.atomic
def customer_update(*, actor: Actor, customer_id: Any, changes: Mapping[str, Any], reason: str = "") -> Customer:
    customer = customer_locked(actor=actor, customer_id=customer_id)
    before = customer_snapshot(customer)
    fields = Fields(changes)
    fields.refuse_unknown(CUSTOMER_FIELDS)
    clean = _read(fields, creating=False)
    external_id = clean.get("external_id")
    if (
        external_id
        and external_id != customer.external_id
        and Customer.objects.filter(organisation=actor.organisation, external_id=external_id).exists()
    ):
        fields.errors.update(_external_id_taken(external_id).errors)
    fields.raise_if_errors()
    for name, value in clean.items():
        setattr(customer, name, value)
    try:
        with transaction.atomic():
            customer.save()
    except IntegrityError:
        raise _external_id_taken(str(external_id)) from None
    customer.refresh_from_db()
    after = customer_snapshot(customer)
    if after != before:
        audit_record(
            actor=actor,
            action="customer.update",
            object_type="customer",
            object_id=str(customer.id),
            before=before,
            after=after,
            reason=reason,
        )
    return customer


@transaction.atomic
def customer_archive(*, actor: Actor, customer_id: Any, reason: str = "") -> Customer:
    """Archive a customer; one with contracts or invoices is refused (409): its history must stay billable.

    Discarded invoices do not count (they were never sent); every other invoice does, even void or paid
    ones, and even when its contract now belongs to another customer (a draft contract's customer may
    change).
    """
    customer = customer_locked(actor=actor, customer_id=customer_id)
    count = customer.contracts.count()
    if count:
        raise Conflict(
            f"Customer {customer.customer_name!r} has {count} contract(s); a customer with contracts or invoices "
            "cannot be deleted."
        )
    invoices = customer.invoices.exclude(status="discarded").count()
    if invoices:
        raise Conflict(
            f"Customer {customer.customer_name!r} has {invoices} invoice(s) (other than discarded ones); a customer "
            "with invoices cannot be deleted."
        )
    if not customer.archived:
        before = customer_snapshot(customer)
        customer.archived = True
        customer.save(update_fields=["archived", "updated_at"])
        audit_record(
            actor=actor,
            action="customer.archive",
            object_type="customer",
            object_id=str(customer.id),
            before=before,
            after=customer_snapshot(customer),
            reason=reason,
        )
    return customer
