from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "zenskar_site.accounts"
    # The label the models were created under: their tables (zenskar_site_*) and migration history keep it.
    label = "zenskar_site"
    verbose_name = "Organisations and access"

    def ready(self) -> None:
        from zenskar_site.accounts import openapi  # noqa: F401  (registers the OpenAPI auth extension)
