from django.apps import AppConfig


class ProjectConfig(AppConfig):
    """The project package itself: the commands that span every app (runembedded, seeddemo)."""

    name = "zenskar_site"
    label = "project"
    verbose_name = "Project"
