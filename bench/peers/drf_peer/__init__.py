"""Benchmark peer: Django REST Framework + djangorestframework-api-key, as their docs teach.

See ``settings.py`` for how it is configured, ``views.py`` for the verify endpoint and
``seed.py`` for loading keys.
"""
