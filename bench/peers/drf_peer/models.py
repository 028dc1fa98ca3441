from django.db import models
from rest_framework_api_key.models import APIKey


class KeyPermission(models.Model):
    """A permission granted to a key: the stock ``APIKey`` has no permissions field."""

    api_key = models.ForeignKey(APIKey, related_name="grants", on_delete=models.CASCADE)
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name
