from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class Organisation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organisation"], name="membership_unique_user_org"),
            models.CheckConstraint(condition=Q(role__in=Role.values), name="membership_role_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organisation} ({self.role})"


class ApiKeyScope(models.TextChoices):
    INGEST = "ingest", "Ingest only"
    FULL = "full", "Full access"


class ApiKey(models.Model):
    """A secret for programs. Only its prefix (indexed, for lookup) and SHA-256 are stored."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scope = models.CharField(max_length=8, choices=ApiKeyScope.choices, default=ApiKeyScope.INGEST)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(scope__in=ApiKeyScope.values), name="apikey_scope_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix} ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AuditQuerySet(models.QuerySet["AuditEntry"]):
    def update(self, **kwargs: object) -> int:
        raise PermissionError("Audit entries are append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit entries are append-only.")


class AuditEntry(models.Model):
    """Append-only record of every change to data; nothing in the code base updates or deletes one."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="audit_entries")
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    actor_api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.PROTECT)
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=128)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["organisation", "object_type", "object_id"], name="audit_object_idx")]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.object_type}:{self.object_id}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise PermissionError("Audit entries are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise PermissionError("Audit entries are append-only.")
