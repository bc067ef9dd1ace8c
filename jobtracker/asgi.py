"""ASGI entry point: Django for HTTP, the live websockets of processing.live for the rest."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "jobtracker.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from jobtracker.runtime import freeze_loaded_objects  # noqa: E402
from processing.live.auth import live_auth  # noqa: E402
from processing.live.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {"http": django_asgi_app, "websocket": live_auth(URLRouter(websocket_urlpatterns))}
)
freeze_loaded_objects()  # daphne serves from here on
