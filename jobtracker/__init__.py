"""Jobtracker: the Django project (settings, URLs, ASGI routing, embedded services)."""
