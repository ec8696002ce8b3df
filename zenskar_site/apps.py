from django.apps import AppConfig


class ZenskarSiteConfig(AppConfig):
    name = "zenskar_site"
    verbose_name = "Organisations and access"

    def ready(self) -> None:
        from zenskar_site import openapi  # noqa: F401  (registers the OpenAPI auth extension)
