from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from zenskar_site.accounts.services import organisation_create
from zenskar_site.lib.errors import ValidationFailed


class Command(BaseCommand):
    help = "Create an organisation and its first admin user."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--admin-email", required=True)
        parser.add_argument("--password", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            organisation, user = organisation_create(
                name=options["name"], admin_email=options["admin_email"], password=options["password"]
            )
        except ValidationFailed as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(f"Organisation {organisation.name} ({organisation.id}); admin {user.get_username()}")
