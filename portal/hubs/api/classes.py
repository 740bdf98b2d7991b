"""REST API of a hub's class sessions (classes that start warm), under
/api/v1/hubs/{hub_pk}/class-sessions/: the owner, co-owners and admins declare them; only
admins cap or refuse their placeholders."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers
from rest_framework.exceptions import PermissionDenied

from portal.hubs.api.members import _HUB, _HubMembersViewSet
from portal.hubs.classes import room
from portal.hubs.models import ClassSession, Hub

ADMIN_FIELDS = ("max_placeholders", "refused", "admin_reason")


class ClassSessionSerializer(serializers.ModelSerializer):
    """A class session and the room held for it (placeholders without and with a GPU)."""

    placeholders = serializers.SerializerMethodField(
        help_text="Placeholder servers held for each occurrence: {servers, gpu_servers}."
    )

    class Meta:
        model = ClassSession
        fields = [
            "id",
            "title",
            "first_day",
            "start_time",
            "duration_minutes",
            "time_zone",
            "weekly",
            "last_day",
            "attendees",
            "gpu_attendees",
            *ADMIN_FIELDS,
            "placeholders",
            "created",
        ]
        read_only_fields = ["id", "created"]

    def get_placeholders(self, session: ClassSession) -> dict[str, int]:
        servers, gpu_servers = room(session, session.hub)
        return {"servers": servers, "gpu_servers": gpu_servers}

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        """Within the hub: its period, its servers, its GPU seats (the room counts against the
        hub's quota, so it may not ask for more than the quota holds)."""
        hub: Hub = self.context["hub"]
        merged = {**self._current(), **data}
        errors: dict[str, str] = {}
        first, last = merged.get("first_day"), merged.get("last_day")
        if first and not (hub.start_date <= first <= hub.end_date):
            errors["first_day"] = (
                f"Pick a day within the hub's period ({hub.start_date} to {hub.end_date})."
            )
        if last and last > hub.end_date:
            errors["last_day"] = f"The hub ends on {hub.end_date}."
        if last and first and last < first:
            errors["last_day"] = "The last day is on or after the first."
        servers = hub.servers
        if merged.get("attendees", 0) > servers:
            errors["attendees"] = (
                f"The hub's quota holds {servers} servers; ask for at most that many."
            )
        gpus = merged.get("gpu_attendees", 0)
        if gpus > merged.get("attendees", 0):
            errors["gpu_attendees"] = "GPU attendees are among the attendees."
        elif gpus and not (hub.gpu_type_id and hub.gpus_per_user):
            errors["gpu_attendees"] = "The hub has no GPUs."
        elif gpus > hub.gpu_servers:
            errors["gpu_attendees"] = (
                f"The hub's GPU seats hold {hub.gpu_servers} GPU servers at once."
            )
        if errors:
            raise serializers.ValidationError(errors)
        return data

    def _current(self) -> dict[str, Any]:
        if self.instance is None:
            return {}
        return {
            name: getattr(self.instance, name)
            for name in self.Meta.fields
            if name != "placeholders"
        }


@extend_schema(tags=["classes"], parameters=[_HUB])
class ClassSessionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    _HubMembersViewSet,
):
    """A hub's class sessions: room is held for each with placeholder servers from the lead
    time before it until it ends. Owner, co-owners and admins only; admins alone set
    `max_placeholders`, `refused` and `admin_reason`."""

    serializer_class = ClassSessionSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ClassSession.objects.none()
        return self.get_hub().class_sessions.select_related("hub").order_by("first_day", "pk")

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if not getattr(self, "swagger_fake_view", False) and "hub_pk" in self.kwargs:
            context["hub"] = self.get_hub()
        return context

    def _admin_fields_only_for_admins(self) -> None:
        if not self.request.user.is_staff and any(
            name in self.request.data for name in ADMIN_FIELDS
        ):
            raise PermissionDenied("Only a portal admin caps or refuses a session's room.")

    def perform_create(self, serializer) -> None:
        self._admin_fields_only_for_admins()
        serializer.save(hub=self.get_hub(), created_by=self.request.user)

    def perform_update(self, serializer) -> None:
        self._admin_fields_only_for_admins()
        serializer.save()
