"""REST API views: authentication, the visible queryset, and a call to the service per action."""

import django_filters
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from portal.hubs import expiry, revisions
from portal.hubs.api import serializers as s
from portal.hubs.lifecycle import HubState
from portal.hubs.models import GpuType, HardwareOption, Hub, HubRevision, Image, StorageOption
from portal.hubs.services import changes, decisions


class HubFilter(django_filters.FilterSet):
    """Filter hubs by state and by the owner's username."""

    state = django_filters.MultipleChoiceFilter(choices=HubState.choices)
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
        hubs = Hub.objects.visible_to(self.request.user).order_by("-created", "-pk")
        if self.action in ("list", "retrieve"):
            # Serialized as loaded; actions change the hub first and serialize it afresh.
            return s.with_representation(hubs)
        return hubs.select_related("owner")

    def _require_staff(self) -> None:
        if not self.request.user.is_staff:
            raise PermissionDenied("Only portal admins may do this.")

    @extend_schema(request=s.HubRequestSerializer, responses={201: s.HubSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Request a hub; it is approved at once when inside the self-service policy."""
        request_serializer = s.HubRequestSerializer(data=request.data)
        request_serializer.is_valid(raise_exception=True)
        try:
            hub = decisions.submit(request.user, request_serializer.form_data())
        except decisions.InvalidSpec as invalid:
            raise ValidationError(s.form_errors_for_api(invalid.errors)) from None
        return Response(s.HubSerializer(hub).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={202: s.HubSerializer})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        """Delete a hub: answers 202 and deprovisions it in the background."""
        hub = self.get_object()
        if not hub.can_manage(request.user):
            raise PermissionDenied("Only the owner, co-owners and admins may delete this hub.")
        hub = decisions.delete(hub, request.user)
        return Response(s.HubSerializer(hub).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=s.ApprovalSerializer,
        responses={
            200: s.HubSerializer,
            400: OpenApiResponse(description="An override without a reason"),
            409: OpenApiResponse(description="Not pending any more, or its GPUs do not fit"),
        },
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str | None = None) -> Response:
        """Approve a pending request (or retry a failed hub); portal admins only. GPUs beyond
        the free capacity over the hub's dates need `override` and a `reason`."""
        hub = self.get_object()
        self._require_staff()
        body = s.ApprovalSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        hub = decisions.approve(
            hub,
            request.user,
            body.validated_data.get("reason", ""),
            override=body.validated_data["override"],
        )
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
        hub = decisions.reject(hub, request.user, body.validated_data["reason"])
        return Response(s.HubSerializer(hub).data)

    @extend_schema(
        request=s.ReasonSerializer,
        responses={
            202: s.HubSerializer,
            409: OpenApiResponse(description="Not suspended, or its end date has passed"),
        },
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        """Resume a suspended hub (scale it back up); portal admins only."""
        hub = self.get_object()
        self._require_staff()
        body = s.ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        hub = expiry.resume(hub, request.user, body.validated_data.get("reason", ""))
        return Response(s.HubSerializer(hub).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=s.ReasonSerializer,
        responses={202: s.HubSerializer, 409: OpenApiResponse(description="Not suspended")},
    )
    @action(detail=True, methods=["post"], url_path="delete-now")
    def delete_now(self, request: Request, pk: str | None = None) -> Response:
        """Delete a suspended hub before its grace period ends; portal admins only."""
        hub = self.get_object()
        self._require_staff()
        body = s.ReasonSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        hub = expiry.delete_now(hub, request.user, body.validated_data.get("reason", ""))
        return Response(s.HubSerializer(hub).data, status=status.HTTP_202_ACCEPTED)


_CONFLICT = OpenApiResponse(description="The hub or the change is not in a state for this")
_BAD = OpenApiResponse(description="Field messages")


@extend_schema(
    tags=["revisions"],
    parameters=[
        OpenApiParameter("hub_pk", OpenApiTypes.INT, OpenApiParameter.PATH, description="Hub id"),
    ],
)
class HubRevisionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Versions of a hub's spec: changes to a running hub, their decisions and rollbacks.

    Callers see the revisions of the hubs they may see (others' hubs are 404); the owner,
    co-owners and admins may request changes and roll back; admins approve and reject.
    """

    serializer_class = s.HubRevisionSerializer
    lookup_field = "number"
    lookup_value_regex = "[0-9]+"
    filter_backends = []

    def get_hub(self) -> Hub:
        if not hasattr(self, "_hub"):
            hubs = Hub.objects.visible_to(self.request.user).select_related("owner")
            self._hub = get_object_or_404(hubs, pk=self.kwargs["hub_pk"])
            # The hub is the object of every call here: a portal admin's token without the
            # admin scope changes only their own hubs (TokenScopePermission).
            self.check_object_permissions(self.request, self._hub)
        return self._hub

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return HubRevision.objects.none()
        hub = self.get_hub()
        changes.ensure_initial_revision(hub)
        return hub.revisions.select_related("author", "approver", "rollback_of").order_by("-number")

    def _managed_hub(self) -> Hub:
        hub = self.get_hub()
        if not hub.can_manage(self.request.user):
            raise PermissionDenied("Only the owner, co-owners and admins may change this hub.")
        return hub

    def _require_staff(self) -> None:
        if not self.request.user.is_staff:
            raise PermissionDenied("Only portal admins may do this.")

    def _change_data(self, hub: Hub) -> dict:
        body = s.HubChangeSerializer(data=self.request.data)
        body.is_valid(raise_exception=True)
        return body.form_data(revisions.spec_of_hub(hub))

    @extend_schema(
        request=s.HubChangeSerializer,
        responses={201: s.HubRevisionSerializer, 400: _BAD, 409: _CONFLICT},
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Request a change; inside the self-service policy it is approved and applied at once,
        beyond it the revision waits for an admin. Fields not given keep their value."""
        hub = self._managed_hub()
        data = self._change_data(hub)
        try:
            revision = changes.request_change(hub, request.user, data)
        except decisions.InvalidSpec as invalid:
            raise ValidationError(s.form_errors_for_api(invalid.errors)) from None
        return Response(s.HubRevisionSerializer(revision).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=s.HubChangeSerializer,
        responses={200: s.ChangePreviewSerializer, 400: _BAD},
    )
    @action(detail=False, methods=["post"])
    def preview(self, request: Request, hub_pk: str | None = None) -> Response:
        """What a change would do (spec diff, rendered objects' diff, policy), saving nothing."""
        hub = self._managed_hub()
        data = self._change_data(hub)
        try:
            plan, diff = changes.preview_change(hub, data)
        except decisions.InvalidSpec as invalid:
            raise ValidationError(s.form_errors_for_api(invalid.errors)) from None
        body = {
            "changed_fields": plan.changed,
            "spec_diff": [vars(change) for change in diff.fields],
            "object_diff": [vars(change) for change in diff.objects],
            "violations": [vars(violation) for violation in plan.violations],
        }
        return Response(s.ChangePreviewSerializer(body).data)

    @extend_schema(
        request=s.ApprovalSerializer,
        responses={
            200: s.HubRevisionSerializer,
            400: OpenApiResponse(description="An override without a reason"),
            409: OpenApiResponse(description="Not pending any more, or its GPUs do not fit"),
        },
    )
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, hub_pk: str | None = None, number: str | None = None):
        """Approve a pending change and apply it; portal admins only. A change whose GPUs do
        not fit in what is free over the hub's dates needs `override` and a `reason`."""
        revision = self.get_object()
        self._require_staff()
        body = s.ApprovalSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        revision = changes.approve_change(
            revision,
            request.user,
            body.validated_data.get("reason", ""),
            override=body.validated_data["override"],
        )
        return Response(s.HubRevisionSerializer(revision).data)

    @extend_schema(
        request=s.RejectSerializer,
        responses={200: s.HubRevisionSerializer, 400: _BAD, 409: _CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, hub_pk: str | None = None, number: str | None = None):
        """Reject a pending change with a reason; portal admins only."""
        revision = self.get_object()
        self._require_staff()
        body = s.RejectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        revision = changes.reject_change(revision, request.user, body.validated_data["reason"])
        return Response(s.HubRevisionSerializer(revision).data)

    @extend_schema(
        request=None,
        responses={201: s.HubRevisionSerializer, 400: _BAD, 409: _CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, hub_pk: str | None = None, number: str | None = None):
        """Request a new revision restoring this earlier applied one; decided like any change."""
        revision = self.get_object()
        hub = self._managed_hub()
        try:
            new = changes.rollback(hub, request.user, revision.number)
        except decisions.InvalidSpec as invalid:
            raise ValidationError(s.form_errors_for_api(invalid.errors)) from None
        return Response(s.HubRevisionSerializer(new).data, status=status.HTTP_201_CREATED)


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
