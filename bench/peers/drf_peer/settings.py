"""Benchmark peer: Django REST Framework + djangorestframework-api-key, as their docs teach.

The library's own ``APIKey`` model and ``APIKey.objects.get_from_key`` with its default
(SHA-512) key hasher, persistent database connections, served by ``gunicorn -w 2``.
Honest, idiomatic, untuned: a yardstick Keyplane's verify must beat.

Settings come from the environment: ``BENCH_DATABASE_URL`` (a SQLAlchemy URL, either
``sqlite:////abs/path.db`` or ``postgresql+psycopg://user@host:port/dbname``) and
``BENCH_DJANGO_SECRET``.
"""

import os
from urllib.parse import unquote, urlsplit


def database_from_url(url: str) -> dict[str, object]:
    """Turn a SQLAlchemy URL into a Django ``DATABASES`` entry."""
    if url.startswith("sqlite:///"):
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": url.removeprefix("sqlite:///")}
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"unsupported BENCH_DATABASE_URL scheme: {parts.scheme}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }


# The default is for this local benchmark only.
SECRET_KEY = os.environ.get("BENCH_DJANGO_SECRET", "bench-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "rest_framework_api_key",
    "bench.peers.drf_peer",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "bench.peers.drf_peer.urls"
WSGI_APPLICATION = "bench.peers.drf_peer.wsgi.application"

DATABASES = {
    "default": {
        **database_from_url(os.environ.get("BENCH_DATABASE_URL", "sqlite:///bench_drf.db")),
        "CONN_MAX_AGE": 600,
        "CONN_HEALTH_CHECKS": True,
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "UNAUTHENTICATED_USER": None,
}
