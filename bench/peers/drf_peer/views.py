"""``POST /v1/keys/verify``: check a key with the library's ``APIKey.objects.get_from_key``.

The caller, the verifying service, is itself checked as the library's docs teach:
``HasAPIKey``, with its own key in ``Authorization: Api-Key ...``.
"""

from rest_framework import serializers
from rest_framework.decorators import api_view, permission_classes
from rest_framework.response import Response
from rest_framework_api_key.models import APIKey
from rest_framework_api_key.permissions import HasAPIKey


class VerifySerializer(serializers.Serializer):
    key = serializers.CharField(max_length=200)
    permissions = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list
    )


def refusal(code: str) -> Response:
    return Response(
        {"valid": False, "code": code, "key_id": None, "permissions": None, "expires_at": None}
    )


@api_view(["POST"])
@permission_classes([HasAPIKey])
def verify_key(request):
    serializer = VerifySerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    try:
        # Raises DoesNotExist for an unknown, malformed or wrong key, and for a revoked
        # one too: the library only looks among usable (revoked=False) keys.
        api_key = APIKey.objects.get_from_key(serializer.validated_data["key"])
    except APIKey.DoesNotExist:
        return refusal("NOT_FOUND")
    if api_key.revoked:  # kept for the contract; get_from_key already excludes these
        return refusal("REVOKED")
    if api_key.has_expired:
        return refusal("EXPIRED")
    held = list(api_key.grants.values_list("name", flat=True))
    if any(name not in held for name in serializer.validated_data["permissions"]):
        return refusal("INSUFFICIENT_PERMISSIONS")
    return Response(
        {
            "valid": True,
            "code": "VALID",
            "key_id": api_key.prefix,
            "permissions": held,
            "expires_at": api_key.expiry_date.isoformat() if api_key.expiry_date else None,
        }
    )
