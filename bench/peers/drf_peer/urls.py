from django.urls import path

from .views import verify_key

urlpatterns = [path("v1/keys/verify", verify_key)]
