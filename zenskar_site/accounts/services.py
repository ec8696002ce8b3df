"""Writes for organisations, memberships, API keys and the audit trail."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from zenskar_site.accounts.actors import Actor
from zenskar_site.accounts.models import ApiKey, ApiKeyScope, AuditEntry, Membership, Organisation, Role
from zenskar_site.lib.errors import Forbidden, NotFound, Unauthenticated, ValidationFailed
from zenskar_site.lib.sql import on_postgres, rows_insert
from zenskar_site.lib.text import unstorable_message

KEY_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
KEY_PREFIX_LENGTH = 12


def api_key_hash(*, secret: str) -> str:
    # API keys are long random secrets, so a fast hash is as strong as a password hasher here
    # and keeps authentication to one indexed lookup and one SHA-256.
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_split(*, secret: str) -> str | None:
    """The prefix of a well-formed key (`zk_<prefix>_<random>`), else None."""
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != "zk" or len(parts[1]) != KEY_PREFIX_LENGTH or not parts[2]:
        return None
    return parts[1]


def api_key_check(*, api_key: ApiKey | None, secret: str, organisation_header: str | None) -> ApiKey:
    """The one API-key check (management API and ingestion alike), on the key row found by the prefix.

    Raises Unauthenticated (401) for an unknown or revoked key, Forbidden (403) when the optional
    `organisation` header names another organisation than the key's.
    """
    if api_key is None or not hmac.compare_digest(api_key.key_hash, api_key_hash(secret=secret)):
        raise Unauthenticated("Unknown API key.")
    if api_key.revoked_at is not None:
        raise Unauthenticated("This API key has been revoked.")
    if organisation_header is not None:
        try:
            claimed = uuid.UUID(organisation_header.strip())
        except ValueError:
            raise Forbidden("The organisation header is not a valid organisation id.") from None
        if claimed != api_key.organisation_id:
            raise Forbidden("The organisation header does not match the API key's organisation.")
    return api_key


@dataclass(frozen=True)
class AuditChange:
    """One change to audit, as `audit_record`'s keyword arguments."""

    actor: Actor
    action: str
    object_type: str
    object_id: str
    before: Any = None
    after: Any = None
    reason: str = ""

    def entry(self) -> AuditEntry:
        return AuditEntry(
            organisation=self.actor.organisation,
            actor_user=self.actor.user,
            actor_api_key=self.actor.api_key,
            actor=self.actor.label,
            action=self.action,
            object_type=self.object_type,
            object_id=str(self.object_id),
            before=self.before,
            after=self.after,
            reason=self.reason,
        )


def audit_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str,
    before: Any = None,
    after: Any = None,
    reason: str = "",
) -> AuditEntry:
    entry = AuditChange(
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        before=before,
        after=after,
        reason=reason,
    ).entry()
    entry.save(force_insert=True)
    return entry


# Every stored field of an entry but its id, in the order `audit_records` gives them on PostgreSQL.
AUDIT_FIELDS = (
    "at",
    "organisation_id",
    "actor_user_id",
    "actor_api_key_id",
    "actor",
    "action",
    "object_type",
    "object_id",
    "before",
    "after",
    "reason",
)


def audit_records(*, changes: Iterable[AuditChange]) -> int:
    """`audit_record` for many changes in one INSERT (in the caller's transaction, as audit_record);
    returns how many. On PostgreSQL the entries go as arrays (`rows_insert`: no model instance, no
    quoting on the client), stamped with one clock reading."""
    changes = list(changes)
    if not changes:
        return 0
    if not on_postgres():
        return len(AuditEntry.objects.bulk_create([change.entry() for change in changes], batch_size=1000))
    at = timezone.now()
    rows = [
        (
            at,
            change.actor.organisation.pk,
            change.actor.user.pk if change.actor.user is not None else None,
            change.actor.api_key.pk if change.actor.api_key is not None else None,
            change.actor.label,
            change.action,
            change.object_type,
            str(change.object_id),
            change.before,
            change.after,
            change.reason,
        )
        for change in changes
    ]
    rows_insert(AuditEntry, columns=AUDIT_FIELDS, rows=rows)
    return len(rows)


def api_key_snapshot(api_key: ApiKey) -> dict[str, Any]:
    return {
        "prefix": api_key.prefix,
        "name": api_key.name,
        "scope": api_key.scope,
        "revoked_at": api_key.revoked_at.isoformat() if api_key.revoked_at else None,
    }


@transaction.atomic
def api_key_create(*, actor: Actor, name: Any, scope: Any) -> tuple[ApiKey, str]:
    """Create a key; the returned secret is the only time it exists in clear. `name` and `scope` come
    from a JSON body as given: anything but a string is refused with the field named."""
    errors: dict[str, list[str]] = {}
    if name is None:
        name = ""
    if not isinstance(name, str):
        errors["name"] = ["Expected a string: give the key a name of 1 to 100 characters."]
    else:
        name = name.strip()
        if not name or len(name) > 100:
            errors["name"] = ["Give the key a name of 1 to 100 characters."]
        elif (problem := unstorable_message(name)) is not None:
            errors["name"] = [problem]
    if not isinstance(scope, str) or scope not in ApiKeyScope.values:
        errors["scope"] = [f"Scope must be one of: {', '.join(ApiKeyScope.values)}."]
    if errors:
        raise ValidationFailed(errors)
    prefix = "".join(secrets.choice(KEY_PREFIX_ALPHABET) for _ in range(KEY_PREFIX_LENGTH))
    secret = f"zk_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        organisation=actor.organisation,
        name=name,
        prefix=prefix,
        key_hash=api_key_hash(secret=secret),
        scope=scope,
        created_by=actor.user if actor.user is not None and actor.user.pk else None,
    )
    audit_record(
        actor=actor, action="api_key.create", object_type="api_key", object_id=prefix, after=api_key_snapshot(api_key)
    )
    return api_key, secret


@transaction.atomic
def api_key_revoke(*, actor: Actor, prefix: str) -> ApiKey:
    api_key = (
        ApiKey.objects.select_for_update()
        .filter(organisation=actor.organisation, prefix=prefix, revoked_at__isnull=True)
        .first()
    )
    if api_key is None:
        raise NotFound(f"No active API key with prefix {prefix!r}.")
    before = api_key_snapshot(api_key)
    api_key.revoked_at = timezone.now()
    api_key.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor,
        action="api_key.revoke",
        object_type="api_key",
        object_id=prefix,
        before=before,
        after=api_key_snapshot(api_key),
    )
    return api_key


def api_key_touch(*, api_key: ApiKey, now: Any, min_interval_seconds: int) -> None:
    """Record use at most once per interval, so authentication does not write on every request."""
    if api_key_touch_due(api_key=api_key, now=now, min_interval_seconds=min_interval_seconds):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now


def api_key_touch_due(*, api_key: ApiKey, now: Any, min_interval_seconds: int) -> bool:
    """Whether api_key_touch would record this use."""
    return api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() >= min_interval_seconds


@transaction.atomic
def organisation_create(*, name: str, admin_email: str, password: str) -> tuple[Organisation, User]:
    """Create an organisation and its first admin (an existing user with that email is reused)."""
    name = (name or "").strip()
    if not name:
        raise ValidationFailed({"name": ["An organisation needs a name."]})
    if "@" not in admin_email:
        raise ValidationFailed({"admin_email": ["Enter a valid email address."]})
    try:
        with transaction.atomic():
            organisation = Organisation.objects.create(name=name)
    except IntegrityError:
        raise ValidationFailed({"name": [f"An organisation named {name!r} already exists."]}) from None
    user_model = get_user_model()
    user = user_model.objects.filter(username=admin_email).first()
    if user is None:
        user = user_model.objects.create_user(username=admin_email, email=admin_email, password=password)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    Membership.objects.create(user=user, organisation=organisation, role=Role.ADMIN)
    return organisation, user


def membership_set(*, user: User, organisation: Organisation, role: str) -> Membership:
    membership, _ = Membership.objects.update_or_create(user=user, organisation=organisation, defaults={"role": role})
    return membership
