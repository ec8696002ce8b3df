from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from billing.invoicing.dispatch import metric_values_changed_receiver
        from metrics.signals import metric_values_changed

        metric_values_changed.connect(metric_values_changed_receiver, dispatch_uid="billing_live_drafts")
