"""REST API of a hub's class sessions (classes that start warm), under
/api/v1/hubs/{hub_pk}/class-sessions/: the owner, co-owners and admins declare them; only
admins cap or refuse their placeholders."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.settings import api_settings

from portal.hubs.api.members import _HUB, _HubMembersViewSet
from portal.hubs.classes import room
from portal.hubs.forms import ClassSessionForm
from portal.hubs.models import ClassSession

ADMIN_FIELDS = ("max_placeholders", "refused", "admin_reason")


class ClassSessionSerializer(serializers.ModelSerializer):
    """A class session and the room held for it (placeholders without and with a GPU)."""

    placeholders = serializers.SerializerMethodField(
        help_text="Placeholder servers held for each occurrence: {servers, gpu_servers}."
    )

    class Meta:
        model = ClassSession
        # What the owner declares is what the hub's page asks for; admins' decisions besides.
        fields = [
            "id",
            *ClassSessionForm.Meta.fields,
            *ADMIN_FIELDS,
            "placeholders",
            "created",
        ]
        read_only_fields = ["id", "created"]

    def get_placeholders(self, session: ClassSession) -> dict[str, int]:
        servers, gpu_servers = room(session, session.hub)
        return {"servers": servers, "gpu_servers": gpu_servers}

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        """The session's own validation (ClassSession.clean), as the web form and the admin
        run it: the given fields over the session's current ones, in the hub of the URL."""
        session = ClassSession(hub=self.context["hub"])
        for name, value in {**self._current(), **data}.items():
            setattr(session, name, value)
        try:
            session.clean()
        except DjangoValidationError as error:
            errors = serializers.as_serializer_error(error)
            if "__all__" in errors:
                errors[api_settings.NON_FIELD_ERRORS_KEY] = errors.pop("__all__")
            raise serializers.ValidationError(errors) from None
        return data

    def _current(self) -> dict[str, Any]:
        if self.instance is None:
            return {}
        return {
            name: getattr(self.instance, name)
            for name in self.Meta.fields
            if name not in ("placeholders", "id", "created")
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
