from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from zenskar_site.accounts.actors import system_actor
from zenskar_site.accounts.models import ApiKeyScope, Organisation
from zenskar_site.accounts.services import api_key_create
from zenskar_site.lib.errors import ValidationFailed


class Command(BaseCommand):
    help = "Create an API key; the key alone is printed on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--organisation", required=True, help="The organisation's name (or id).")
        parser.add_argument("--scope", choices=ApiKeyScope.values, default=ApiKeyScope.FULL)
        parser.add_argument("--name", default="created by manage.py createapikey")

    def handle(self, *args: Any, **options: Any) -> None:
        wanted = options["organisation"]
        organisation = Organisation.objects.filter(name=wanted).first()
        if organisation is None:
            try:
                organisation = Organisation.objects.filter(id=wanted).first()
            except Exception:  # not a UUID
                organisation = None
        if organisation is None:
            raise CommandError(f"No organisation named {wanted!r}.")
        try:
            api_key, secret = api_key_create(
                actor=system_actor(organisation=organisation), name=options["name"], scope=options["scope"]
            )
        except ValidationFailed as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"API key {api_key.prefix} ({api_key.scope}) for {organisation.name}:")
        self.stdout.write(secret)
