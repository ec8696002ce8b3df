from django.apps import AppConfig


class ZenskarSiteConfig(AppConfig):
    name = "zenskar_site"
    verbose_name = "Organisations and access"
