"""Personal API tokens: the "API tokens" page and /api/v1/tokens/ (list, create, revoke own)."""

from __future__ import annotations

import datetime

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from portal.accounts import tokens
from portal.accounts.models import ApiToken

EXPIRY_CHOICES = [("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]
EXPIRY_CHOICES_NEVER = [*EXPIRY_CHOICES, ("", "Never")]
MAX_EXPIRY_DAYS = 3650


def _expiry(days: int | None) -> datetime.datetime | None:
    return timezone.now() + datetime.timedelta(days=days) if days else None


def _expiry_choices() -> list[tuple[str, str]]:
    """Lifetimes the page offers: those within API_TOKEN_MAX_DAYS ("Never" only without it)."""
    longest = tokens.max_lifetime()
    if longest is None:
        return EXPIRY_CHOICES_NEVER
    return [(days, label) for days, label in EXPIRY_CHOICES if int(days) <= longest.days] or [
        (str(longest.days), f"{longest.days} days")
    ]


# --- Web page -----------------------------------------------------------------------------------


class TokenForm(forms.Form):
    """Name, scope and lifetime of a new token; the admin scope is offered to admins only."""

    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'CI'.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ)
    expires_in_days = forms.ChoiceField(
        choices=EXPIRY_CHOICES_NEVER, initial="90", required=False, label="Expires in"
    )

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        choices = _expiry_choices()
        self.fields["expires_in_days"].choices = choices
        self.fields["expires_in_days"].initial = "90" if ("90", "90 days") in choices else None
        if not user.is_staff:
            self.fields["scope"].choices = [
                c for c in ApiToken.Scope.choices if c[0] != ApiToken.Scope.ADMIN
            ]


def _page(request: HttpRequest, form: TokenForm, new_token: str = "", status: int = 200):
    rows = ApiToken.objects.filter(user=request.user).order_by("-created_at", "-pk")
    context = {"tokens": rows, "form": form, "new_token": new_token, "now": timezone.now()}
    return render(request, "accounts/tokens.html", context, status=status)


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """The user's tokens; a POST creates one and shows it once, on this answer only."""
    if request.method == "GET":
        return _page(request, TokenForm(user=request.user))
    form = TokenForm(request.POST, user=request.user)
    if not form.is_valid():
        return _page(request, form, status=400)
    days = form.cleaned_data["expires_in_days"]
    try:
        _, clear = tokens.issue(
            request.user,
            name=form.cleaned_data["name"],
            scope=form.cleaned_data["scope"],
            expires_at=_expiry(int(days) if days else None),
        )
    except tokens.TokenError as error:
        form.add_error(None, str(error))
        return _page(request, form, status=400)
    return _page(request, TokenForm(user=request.user), new_token=clear)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke one of the user's tokens; others' tokens are 404."""
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    if tokens.revoke(token, request.user):
        messages.success(request, f"Token {token.name} ({token.prefix}…) was revoked.")
    else:
        messages.info(request, f"Token {token.name} was already revoked.")
    return redirect("tokens:list")


app_name = "tokens"
urlpatterns = [
    path("", token_list, name="list"),
    path("<int:pk>/revoke/", token_revoke, name="revoke"),
]


# --- API ----------------------------------------------------------------------------------------


class ApiTokenSerializer(serializers.ModelSerializer):
    """A token as listed: never the token itself nor its digest."""

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "prefix",
            "scope",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ]
        read_only_fields = fields


class NewApiTokenSerializer(ApiTokenSerializer):
    """A token just created: the only answer that carries the token, shown once."""

    token = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class ApiTokenRequestSerializer(serializers.Serializer):
    """What a new token should be."""

    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=ApiToken.Scope.choices, default=ApiToken.Scope.WRITE)
    expires_in_days = serializers.IntegerField(
        min_value=1,
        max_value=MAX_EXPIRY_DAYS,
        required=False,
        allow_null=True,
        default=None,
        help_text="Days until the token expires; at most API_TOKEN_MAX_DAYS (default 90), "
        "which is also the lifetime when none is given.",
    )

    def validate_expires_in_days(self, days: int | None) -> int | None:
        longest = tokens.max_lifetime()
        if longest is not None and days is not None and days > longest.days:
            raise serializers.ValidationError(f"Tokens live at most {longest.days} days here.")
        return days


@extend_schema(tags=["tokens"])
class ApiTokenViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The caller's own API tokens; DELETE revokes one (it stays listed, revoked)."""

    serializer_class = ApiTokenSerializer
    filter_backends = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user).order_by("-created_at", "-pk")

    @extend_schema(request=ApiTokenRequestSerializer, responses={201: NewApiTokenSerializer})
    def create(self, request: Request, *args, **kwargs) -> Response:
        """Create a token; the answer is the only time the token is shown."""
        body = ApiTokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        scope = body.validated_data["scope"]
        if scope == ApiToken.Scope.ADMIN and not request.user.is_staff:
            raise ValidationError({"scope": ["Only portal admins may have admin-scope tokens."]})
        caller = request.auth if isinstance(request.auth, ApiToken) else None
        if caller is not None and _rank(scope) > _rank(tokens.effective_scope(caller)):
            # A token may not mint a more powerful one.
            raise PermissionDenied(
                f"This token has the {caller.scope} scope; it cannot create a token with the "
                f"{scope} scope."
            )
        expires_at = _expiry(body.validated_data.get("expires_in_days"))
        outlives = expires_at is None or (
            caller is not None and caller.expires_at and expires_at > caller.expires_at
        )
        if caller is not None and caller.expires_at is not None and outlives:
            expires_at = caller.expires_at  # nor one that outlives it
        try:
            token, clear = tokens.issue(
                request.user, name=body.validated_data["name"], scope=scope, expires_at=expires_at
            )
        except tokens.TokenError as error:
            field = "scope" if "scope" in str(error) else "name"
            raise ValidationError({field: [str(error)]}) from None
        data = NewApiTokenSerializer(token).data
        data["token"] = clear
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        """Revoke a token of the caller's (revoking a revoked one changes nothing)."""
        tokens.revoke(self.get_object(), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _rank(scope: str) -> int:
    return [ApiToken.Scope.READ, ApiToken.Scope.WRITE, ApiToken.Scope.ADMIN].index(scope)
