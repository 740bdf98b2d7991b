"""/api/v1/audit/: the audit log for portal admins (admin-scope tokens), filtered."""

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, viewsets

from portal.accounts.tokens import TokenScopePermission
from portal.audit.filters import AuditEventFilter
from portal.audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    """One recorded action."""

    actor = serializers.CharField(source="actor_username", read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created",
            "actor",
            "source_ip",
            "via",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "details",
        ]
        read_only_fields = fields


@extend_schema(tags=["audit"])
class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Recorded actions, newest first; portal admins only."""

    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    permission_classes = [permissions.IsAdminUser, TokenScopePermission]
    required_scope = "admin"
    queryset = AuditEvent.objects.select_related(None).order_by("-created", "-pk")
