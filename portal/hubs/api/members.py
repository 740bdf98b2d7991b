"""REST API of a hub's members, e-mail invitations, IdP group grants and member tiers, under
/api/v1/hubs/{hub_pk}/: each endpoint calls one service of portal.hubs.members.

A hub the caller may not see is 404. Members of a hub read its member list and tiers (as the
hub's own `collaborators` field already shows them); invitations (e-mail addresses) and group
grants are for the owner, co-owners and admins, who alone change anything (others get 403).
Invitation tokens appear only in the response that creates them.
"""

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from portal.accounts.tokens import admin_powers
from portal.hubs import members
from portal.hubs.models import GroupGrant, Hub, Invitation, Member, MemberTier

_ROLES = Member.Role.choices
_BAD = OpenApiResponse(description="Field messages")
_CONFLICT = OpenApiResponse(description="Not possible in the current state (message)")
_HUB = OpenApiParameter("hub_pk", OpenApiTypes.INT, OpenApiParameter.PATH, description="Hub id")

# --- Representations --------------------------------------------------------------------------


class TierSerializer(serializers.ModelSerializer):
    """A member tier; hardware options and images by name (empty: all the hub offers)."""

    hardware_options = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    images = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = MemberTier
        fields = [
            "id",
            "name",
            "description",
            "hardware_options",
            "gpu_access",
            "images",
            "shared_access",
            "jobs_access",
            "is_default",
        ]


class TierWriteSerializer(serializers.Serializer):
    """Define or edit a tier; fields not given keep their value."""

    name = serializers.SlugField(max_length=40, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    hardware_options = serializers.ListField(
        child=serializers.CharField(max_length=50), required=False, max_length=100
    )
    gpu_access = serializers.BooleanField(required=False)
    images = serializers.ListField(
        child=serializers.CharField(max_length=50), required=False, max_length=100
    )
    shared_access = serializers.ChoiceField(choices=MemberTier.SharedAccess.choices, required=False)
    jobs_access = serializers.BooleanField(required=False)

    def form_data(self, tier: MemberTier | None) -> dict[str, Any]:
        """Form-shaped data for MemberTierForm: the given fields over the tier's current ones."""
        current: dict[str, Any] = {
            "name": "",
            "description": "",
            "hardware_options": [],
            "gpu_access": True,
            "images": [],
            "shared_access": MemberTier.SharedAccess.READ_ONLY,
            "jobs_access": False,
        }
        if tier is not None:
            current.update(
                name=tier.name,
                description=tier.description,
                hardware_options=[o.name for o in tier.hardware_options.all()],
                gpu_access=tier.gpu_access,
                images=[i.name for i in tier.images.all()],
                shared_access=tier.shared_access,
                jobs_access=tier.jobs_access,
            )
        current.update(self.validated_data)
        # Unchecked boxes are absent from form data.
        for flag in ("gpu_access", "jobs_access"):
            if not current[flag]:
                current.pop(flag)
        return current


def _tier_name(obj) -> str | None:
    return obj.tier.name if obj.tier_id else None


class MemberSerializer(serializers.ModelSerializer):
    """A collaborator: username, role, tier (null: the hub's default tier)."""

    username = serializers.CharField(source="user.username", read_only=True)
    tier = serializers.SerializerMethodField()

    class Meta:
        model = Member
        fields = ["id", "username", "role", "tier"]

    def get_tier(self, obj: Member) -> str | None:
        return _tier_name(obj)


class MemberCreateSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=_ROLES, default=Member.Role.MEMBER)
    tier = serializers.CharField(max_length=40, required=False, allow_null=True, allow_blank=True)


class MemberChangeSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=_ROLES, required=False)
    tier = serializers.CharField(max_length=40, required=False, allow_null=True, allow_blank=True)


class InvitationSerializer(serializers.ModelSerializer):
    """An invitation without its token (stored only as a hash)."""

    tier = serializers.SerializerMethodField()
    invited_by = serializers.CharField(source="invited_by.username", read_only=True, default=None)
    accepted_by = serializers.CharField(source="accepted_by.username", read_only=True, default=None)
    status = serializers.SerializerMethodField()

    class Meta:
        model = Invitation
        fields = [
            "id",
            "email",
            "role",
            "tier",
            "anyone_with_link",
            "status",
            "invited_by",
            "created",
            "expires_at",
            "revoked_at",
            "accepted_by",
            "accepted_at",
        ]

    def get_tier(self, obj: Invitation) -> str | None:
        return _tier_name(obj)

    def get_status(self, obj: Invitation) -> str:
        return obj.status()


class NewInvitationSerializer(InvitationSerializer):
    """The created invitation with its link and token: shown this once, never again."""

    token = serializers.CharField(read_only=True)
    link = serializers.URLField(read_only=True)
    mailed = serializers.BooleanField(read_only=True)

    class Meta(InvitationSerializer.Meta):
        fields = [*InvitationSerializer.Meta.fields, "token", "link", "mailed"]


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=_ROLES, default=Member.Role.MEMBER)
    tier = serializers.CharField(max_length=40, required=False, allow_null=True, allow_blank=True)
    anyone_with_link = serializers.BooleanField(
        default=False,
        help_text="Anyone signed in who holds the link may accept it. False (the default): "
        "only a user whose identity provider verified `email`.",
    )


class InvitationAcceptSerializer(serializers.Serializer):
    token = serializers.CharField(
        max_length=200, help_text="The invitation's token: the part of its link after '#'."
    )


class GroupGrantSerializer(serializers.ModelSerializer):
    tier = serializers.SerializerMethodField()

    class Meta:
        model = GroupGrant
        fields = ["id", "group", "role", "tier", "created"]

    def get_tier(self, obj: GroupGrant) -> str | None:
        return _tier_name(obj)


class GroupGrantCreateSerializer(serializers.Serializer):
    group = serializers.CharField(max_length=200)
    role = serializers.ChoiceField(choices=_ROLES, default=Member.Role.MEMBER)
    tier = serializers.CharField(max_length=40, required=False, allow_null=True, allow_blank=True)


class GroupGrantChangeSerializer(MemberChangeSerializer):
    pass


def _form_data(body: serializers.Serializer, **current: Any) -> dict[str, Any]:
    """Form-shaped data: validated fields over the current ones, no tier as ""."""
    data = {**current, **body.validated_data}
    data["tier"] = data.get("tier") or ""
    return data


def _errors(invalid: members.InvalidMemberData) -> dict[str, list[str]]:
    return {
        ("non_field_errors" if field == "__all__" else field): messages
        for field, messages in invalid.errors.items()
    }


# --- Views ------------------------------------------------------------------------------------


class _HubMembersViewSet(viewsets.GenericViewSet):
    """The hub from the URL (404 unless visible); changes by managers only (403 for members),
    reading by managers, and by members where `members_may_read`."""

    filter_backends = []
    members_may_read = False

    def get_hub(self) -> Hub:
        if not hasattr(self, "_hub"):
            hubs = Hub.objects.visible_to(self.request.user).select_related("owner")
            hub = get_object_or_404(hubs, pk=self.kwargs["hub_pk"])
            # A portal admin's token without the admin scope changes only their own hubs.
            self.check_object_permissions(self.request, hub)
            reading = self.request.method in ("GET", "HEAD", "OPTIONS") and self.members_may_read
            if not reading and not self._manages(hub):
                raise PermissionDenied("Only the hub's owner, co-owners and admins may do this.")
            self._hub = hub
        return self._hub

    def _manages(self, hub: Hub) -> bool:
        """Manager of the hub: owner, co-owner, or admin with admin powers (a staff user's
        token without the admin scope manages only the hubs its user manages as a user)."""
        return hub.can_manage(self.request.user, as_admin=admin_powers(self.request))

    def handle_exception(self, exc):
        if isinstance(exc, members.InvalidMemberData):
            exc = ValidationError(_errors(exc))
        elif isinstance(exc, members.NotAllowed):
            exc = PermissionDenied(str(exc))
        elif isinstance(exc, members.MembershipError):
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return super().handle_exception(exc)


@extend_schema(tags=["members"], parameters=[_HUB])
class MemberViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, _HubMembersViewSet
):
    """A hub's co-owners and members, with their tiers (the owner is not listed); members
    read it, the owner, co-owners and admins change it."""

    serializer_class = MemberSerializer
    members_may_read = True

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Member.objects.none()
        return (
            self.get_hub().members.select_related("user", "tier").order_by("user__username", "pk")
        )

    @extend_schema(request=MemberCreateSerializer, responses={201: MemberSerializer, 400: _BAD})
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Add an existing portal user by username."""
        body = MemberCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        collaborator = members.add_member(self.get_hub(), request.user, _form_data(body))
        return Response(MemberSerializer(collaborator).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MemberChangeSerializer, responses={200: MemberSerializer, 400: _BAD})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        """Change a member's role or tier."""
        collaborator = self.get_object()
        body = MemberChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        current = {"role": collaborator.role, "tier": _tier_name(collaborator)}
        collaborator = members.change_member(
            collaborator, request.user, _form_data(body, **current)
        )
        return Response(MemberSerializer(collaborator).data)

    def perform_destroy(self, instance: Member) -> None:
        members.remove_member(instance, self.request.user)


@extend_schema(tags=["members"], parameters=[_HUB])
class InvitationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _HubMembersViewSet):
    """E-mail invitations to a hub; the token is in the create response only."""

    serializer_class = InvitationSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Invitation.objects.none()
        return self.get_hub().invitations.select_related("tier", "invited_by", "accepted_by")

    @extend_schema(
        request=InvitationCreateSerializer, responses={201: NewInvitationSerializer, 400: _BAD}
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Invite someone by e-mail; the link is mailed and returned this once."""
        body = InvitationCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        new = members.invite(self.get_hub(), request.user, _form_data(body))
        data = {
            **InvitationSerializer(new.invitation).data,
            "token": new.token,
            "link": new.link,
            "mailed": new.mailed,
        }
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: InvitationSerializer, 409: _CONFLICT})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, hub_pk: str | None = None, pk: str | None = None):
        """Revoke a pending invitation; its link stops working."""
        invitation = members.revoke_invitation(self.get_object(), request.user)
        return Response(InvitationSerializer(invitation).data)

    @extend_schema(
        request=InvitationAcceptSerializer,
        responses={
            201: MemberSerializer,
            400: _BAD,
            403: OpenApiResponse(
                description="The invitation is for an e-mail address the caller's identity "
                "provider has not verified for them (message)"
            ),
            409: _CONFLICT,
        },
    )
    @action(detail=False, methods=["post"])
    def accept(self, request: Request, hub_pk: str | None = None) -> Response:
        """Accept an invitation as the caller (who need not see the hub yet): the caller's
        identity provider must have verified the invited e-mail address, unless the invitation
        is for anyone with the link."""
        body = InvitationAcceptSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            collaborator = members.accept_invitation(
                int(hub_pk), body.validated_data["token"], request.user
            )
        except members.InvitationInvalid as invalid:
            raise ValidationError({"token": [str(invalid)]}) from None
        return Response(MemberSerializer(collaborator).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["members"], parameters=[_HUB])
class GroupGrantViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, _HubMembersViewSet
):
    """IdP groups whose members may use the hub, with a role and a tier."""

    serializer_class = GroupGrantSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return GroupGrant.objects.none()
        return self.get_hub().group_grants.select_related("tier")

    @extend_schema(
        request=GroupGrantCreateSerializer, responses={201: GroupGrantSerializer, 400: _BAD}
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Give an IdP group access."""
        body = GroupGrantCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        grant = members.grant_group(self.get_hub(), request.user, _form_data(body))
        return Response(GroupGrantSerializer(grant).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=GroupGrantChangeSerializer, responses={200: GroupGrantSerializer, 400: _BAD}
    )
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        """Change a group's role or tier."""
        grant = self.get_object()
        body = GroupGrantChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        current = {"group": grant.group, "role": grant.role, "tier": _tier_name(grant)}
        grant = members.change_group_grant(grant, request.user, _form_data(body, **current))
        return Response(GroupGrantSerializer(grant).data)

    def perform_destroy(self, instance: GroupGrant) -> None:
        members.revoke_group_grant(instance, self.request.user)


@extend_schema(tags=["members"], parameters=[_HUB])
class TierViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, _HubMembersViewSet
):
    """A hub's member tiers: what members in each may use (members read them)."""

    serializer_class = TierSerializer
    members_may_read = True

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return MemberTier.objects.none()
        hub = self.get_hub()
        members.default_tier(hub)
        return hub.tiers.prefetch_related("hardware_options", "images")

    @extend_schema(request=TierWriteSerializer, responses={201: TierSerializer, 400: _BAD})
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Define a tier."""
        body = TierWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tier = members.create_tier(self.get_hub(), request.user, body.form_data(None))
        return Response(TierSerializer(tier).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TierWriteSerializer, responses={200: TierSerializer, 400: _BAD})
    def partial_update(self, request: Request, *args, **kwargs) -> Response:
        """Edit a tier; its members get the new rights at their next server start."""
        tier = self.get_object()
        body = TierWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        tier = members.update_tier(tier, request.user, body.form_data(tier))
        return Response(TierSerializer(tier).data)

    @extend_schema(responses={204: None, 409: _CONFLICT})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        """Delete a tier (not the default one); its members fall back to the default tier."""
        members.delete_tier(self.get_object(), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Registered by portal/hubs/api/urls.py under hubs/<hub_pk>/.
ROUTES = [
    ("members", MemberViewSet, "hub-member"),
    ("invitations", InvitationViewSet, "hub-invitation"),
    ("group-grants", GroupGrantViewSet, "hub-group-grant"),
    ("tiers", TierViewSet, "hub-tier"),
]
