"""Jobtracker: the Django project (settings, URLs, ASGI); ``dev/`` is what ``./dev`` runs."""
