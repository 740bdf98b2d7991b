"""REST API views: authentication, the visible queryset, and a call to the service per action."""

import django_filters
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from portal.hubs import services
from portal.hubs.api import serializers as s
from portal.hubs.lifecycle import State
from portal.hubs.models import GpuType, HardwareOption, Hub, Image, StorageOption


class HubFilter(django_filters.FilterSet):
    """Filter hubs by state and by the owner's username."""

    state = django_filters.MultipleChoiceFilter(choices=State.choices)
    owner = django_filters.CharFilter(field_name="owner__username")

    class Meta:
        model = Hub
        fields = ["state", "owner"]


@extend_schema(tags=["hubs"])
class HubViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Hubs the caller owns or collaborates on (portal admins: all hubs)."""

    serializer_class = s.HubSerializer
    filterset_class = HubFilter

    def get_queryset(self):
        # The one place that narrows what a caller may see; others' hubs are then 404.
        return (
            Hub.objects.visible_to(self.request.user)
            .select_related("owner", "gpu_type")
            .prefetch_related(
                "hardware_options",
                "images",
                "storage_options",
                "events__actor",
                "collaborators__user",
            )
            .order_by("-created", "-pk")
        )

    def _require_staff(self) -> None:
        if not self.request.user.is_staff:
            raise PermissionDenied("Only portal admins may do this.")

    @extend_schema(request=s.HubRequestSerializer, responses={201: s.HubSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Request a hub; it is approved at once when inside the self-service policy."""
        request_serializer = s.HubRequestSerializer(data=request.data)
        request_serializer.is_valid(raise_exception=True)
        try:
            hub = services.submit(request.user, request_serializer.form_data())
        except services.InvalidSpec as invalid:
            raise ValidationError(s.form_errors_for_api(invalid.errors)) from None
        return Response(s.HubSerializer(hub).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={202: s.HubSerializer})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        """Delete a hub: answers 202 and deprovisions it in the background."""
        hub = self.get_object()
        if not hub.can_manage(request.user):
            raise PermissionDenied("Only the owner, co-owners and admins may delete this hub.")
        hub = services.delete(hub, request.user)
        return Response(s.HubSerializer(hub).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=s.ApproveSerializer,
        responses={200: s.HubSerializer, 409: OpenApiResponse(description="Not pending any more")},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        """Approve a pending request (or retry a failed hub); portal admins only."""
        hub = self.get_object()
        self._require_staff()
        body = s.ApproveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        hub = services.approve(hub, request.user, body.validated_data.get("reason", ""))
        return Response(s.HubSerializer(hub).data)

    @extend_schema(
        request=s.RejectSerializer,
        responses={200: s.HubSerializer, 409: OpenApiResponse(description="Not pending any more")},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str | None = None) -> Response:
        """Reject a pending request with a reason; portal admins only."""
        hub = self.get_object()
        self._require_staff()
        body = s.RejectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        hub = services.reject(hub, request.user, body.validated_data["reason"])
        return Response(s.HubSerializer(hub).data)


class CatalogueViewSet(viewsets.ReadOnlyModelViewSet):
    """Enabled entries of a catalogue, looked up by name."""

    lookup_field = "name"
    filter_backends = []

    def get_queryset(self):
        return self.serializer_class.Meta.model.objects.enabled()


@extend_schema(tags=["catalogues"])
class HardwareOptionViewSet(CatalogueViewSet):
    """Server sizes (CPU and memory) a hub's users may pick."""

    serializer_class = s.HardwareOptionSerializer
    queryset = HardwareOption.objects.none()


@extend_schema(tags=["catalogues"])
class GpuTypeViewSet(CatalogueViewSet):
    """GPU types a hub may request."""

    serializer_class = s.GpuTypeSerializer
    queryset = GpuType.objects.none()


@extend_schema(tags=["catalogues"])
class ImageViewSet(CatalogueViewSet):
    """Images a hub may offer."""

    serializer_class = s.ImageSerializer
    queryset = Image.objects.none()


@extend_schema(tags=["catalogues"])
class StorageOptionViewSet(CatalogueViewSet):
    """External storage a hub may mount."""

    serializer_class = s.StorageOptionSerializer
    queryset = StorageOption.objects.none()


def api_docs(request: HttpRequest) -> HttpResponse:
    """A plain page listing the API's operations, generated from the OpenAPI schema (no CDN)."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = []
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": operation.get("description", "").split("\n")[0],
                    "tag": (operation.get("tags") or [""])[0],
                }
            )
    return render(request, "api/docs.html", {"schema": schema, "operations": operations})
