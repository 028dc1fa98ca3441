from django.apps import AppConfig


class DrfPeerConfig(AppConfig):
    name = "bench.peers.drf_peer"
    label = "drf_peer"
    default_auto_field = "django.db.models.BigAutoField"
