"""App configuration."""

from django.apps import AppConfig


class ProcessingConfig(AppConfig):
    """The processing app."""

    name = "processing"
    verbose_name = "Document processing"
    default_auto_field = "django.db.models.BigAutoField"
