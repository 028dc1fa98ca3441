"""WSGI entry point: ``gunicorn -w 2 bench.peers.drf_peer.wsgi:application``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.drf_peer.settings")

application = get_wsgi_application()
