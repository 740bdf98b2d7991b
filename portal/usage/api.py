"""REST API of usage, cost and GPU capacity (under /api/v1/, see api_urls.py).

Who sees what: a hub's usage is visible to whoever sees the hub (404 otherwise); its owner,
co-owners and admins get every user, members only their own. A user's own usage is theirs
(admins: anyone's). Totals over all hubs and their CSV are for admins. GPU capacity is open to
every signed-in user: the request form shows it; the room it lists as held for classes is
every hub's for admins, otherwise only that of the hubs the caller sees.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import PermissionDenied
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.accounts.tokens import admin_powers
from portal.hubs import classes
from portal.hubs.models import GpuType, Hub
from portal.usage import capacity, queries
from portal.usage import serializers as s

_BAD = OpenApiResponse(description="Bad parameters: {parameter: [message]}")
_PERIOD = [
    OpenApiParameter(
        "start", OpenApiTypes.DATE, description="First day (UTC); default 30 days ago"
    ),
    OpenApiParameter(
        "end", OpenApiTypes.DATE, description="Last day (UTC), included; default today"
    ),
    OpenApiParameter("granularity", OpenApiTypes.STR, enum=list(queries.GRANULARITIES)),
]
_BY = OpenApiParameter("by", OpenApiTypes.STR, enum=list(queries.TOTALS_BY))
_CSV = {(200, "text/csv"): OpenApiTypes.STR, 400: _BAD}


class CSVRenderer(BaseRenderer):
    """Passes CSV text through; error bodies become JSON text."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type=None, renderer_context=None) -> bytes:
        if isinstance(data, str):
            return data.encode()
        return json.dumps(data, default=str).encode()


def _bad(error: queries.UsageQueryError) -> Response:
    return Response({name: [message] for name, message in error.errors.items()}, status=400)


def _period(request: Request) -> queries.Period:
    params = request.query_params
    return queries.parse_period(params.get("start"), params.get("end"), params.get("granularity"))


def _csv(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _visible_hub(request: Request, pk: int) -> Hub:
    """The hub if the caller may see it; a staff user's token without the admin scope sees
    the hubs (and their usage) its user sees as a user."""
    hubs = Hub.objects.visible_to(request.user, as_admin=admin_powers(request))
    return get_object_or_404(hubs, pk=pk)


class HubUsageView(APIView):
    """Usage and cost of one hub over a period, per time bucket and per user."""

    @extend_schema(
        tags=["usage"],
        parameters=_PERIOD,
        responses={200: s.UsageReportSerializer, 400: _BAD},
        operation_id="hub_usage",
    )
    def get(self, request: Request, pk: int) -> Response:
        """A hub's usage: owners, co-owners and admins see every user, members their own."""
        hub = _visible_hub(request, pk)
        try:
            period = _period(request)
        except queries.UsageQueryError as error:
            return _bad(error)
        report = queries.hub_usage(hub, request.user, period, as_admin=admin_powers(request))
        return Response(s.UsageReportSerializer(report.as_dict()).data)


class HubUsageCsvView(APIView):
    """A hub's usage as CSV: per bucket, per user, total; for its owner, co-owners, admins."""

    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(tags=["usage"], parameters=_PERIOD, responses=_CSV, operation_id="hub_usage_csv")
    def get(self, request: Request, pk: int) -> HttpResponse:
        """Download a hub's usage and cost as CSV."""
        hub = _visible_hub(request, pk)
        as_admin = admin_powers(request)
        if not queries.sees_all_users(hub, request.user, as_admin=as_admin):
            raise PermissionDenied("Only the hub's owners and admins may export its usage.")
        try:
            period = _period(request)
        except queries.UsageQueryError as error:
            return _bad(error)
        report = queries.hub_usage(hub, request.user, period, as_admin=as_admin)
        name = f"usage-{hub.slug}-{period.start}-{period.end}-{period.granularity}.csv"
        return _csv(queries.hub_csv(report), name)


class UserUsageView(APIView):
    """One user's own usage across all hubs (admins: any user's)."""

    @extend_schema(
        tags=["usage"],
        parameters=_PERIOD,
        responses={200: s.UsageReportSerializer, 400: _BAD, 404: OpenApiResponse()},
        operation_id="user_usage",
    )
    def get(self, request: Request, username: str) -> Response:
        """A user's usage per time bucket and per hub; `me` is the caller."""
        if username in ("me", request.user.get_username()):
            user = request.user
        elif admin_powers(request):
            # A staff user's token without the admin scope reads only its own user's usage.
            user = get_object_or_404(get_user_model(), username=username)
        else:
            # Not whether the user exists: only that the caller may not look.
            return Response({"detail": "Not found."}, status=404)
        try:
            period = _period(request)
        except queries.UsageQueryError as error:
            return _bad(error)
        report = queries.user_usage(user, period)
        return Response(s.UsageReportSerializer(report.as_dict()).data)


def _totals(request: Request) -> tuple[queries.Period, str, list[queries.Line], queries.Line]:
    if not request.user.is_staff:
        raise PermissionDenied("Only portal admins may see the totals of all hubs.")
    period = _period(request)
    by = request.query_params.get("by") or "hub"
    lines, total = queries.admin_totals(period, by)
    return period, by, lines, total


class TotalsView(APIView):
    """Usage and cost of all hubs by hub, owner or GPU type (admins)."""

    required_scope = "admin"  # a token needs the admin scope, as for every admin-only endpoint

    @extend_schema(
        tags=["usage"],
        parameters=[*_PERIOD, _BY],
        responses={200: s.TotalsSerializer, 400: _BAD},
        operation_id="usage_totals",
    )
    def get(self, request: Request) -> Response:
        """Totals per hub, owner or GPU type over a period, most expensive first."""
        try:
            period, by, lines, total = _totals(request)
        except queries.UsageQueryError as error:
            return _bad(error)
        data = {
            "start": period.start,
            "end": period.end,
            "by": by,
            "currency": queries.currency(),
            "total": total.as_dict(),
            "lines": [line.as_dict() for line in lines],
        }
        return Response(s.TotalsSerializer(data).data)


class TotalsCsvView(APIView):
    """The admin totals as CSV."""

    required_scope = "admin"

    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(
        tags=["usage"], parameters=[*_PERIOD, _BY], responses=_CSV, operation_id="usage_totals_csv"
    )
    def get(self, request: Request) -> HttpResponse:
        """Download the totals per hub, owner or GPU type as CSV."""
        try:
            period, by, lines, total = _totals(request)
        except queries.UsageQueryError as error:
            return _bad(error)
        return _csv(queries.to_csv(lines, total), f"usage-by-{by}-{period.start}-{period.end}.csv")


class GpuCapacityView(APIView):
    """GPUs per type: allocatable and in use now, and free over a period."""

    @extend_schema(
        tags=["capacity"],
        parameters=[
            OpenApiParameter("start", OpenApiTypes.DATE, description="Default today"),
            OpenApiParameter("end", OpenApiTypes.DATE, description="Default start + 27 days"),
        ],
        responses={200: s.CapacitySerializer, 400: _BAD},
        operation_id="gpu_capacity",
    )
    def get(self, request: Request) -> Response:
        """For every GPU type: allocatable, in use now, most reserved and free over the period
        (allocatable minus the most reserved on any day); and the room held for classes."""
        query = s.CapacityQuerySerializer(data=request.query_params)
        if not query.is_valid():
            return Response(query.errors, status=400)
        start: date = query.validated_data.get("start") or queries.today()
        end: date = query.validated_data.get("end") or start + timedelta(days=27)
        if end < start:
            return Response({"end": ["The end must not be before the start."]}, status=400)
        if (end - start).days >= queries.MAX_PERIOD_DAYS * 3:
            return Response({"end": ["Ask for a shorter period."]}, status=400)
        now = {row.product: row for row in capacity.gpus_now()}
        rows = []
        for gpu_type in GpuType.objects.enabled().order_by("name"):
            free = capacity.free_over(gpu_type, start, end)
            seen = now.get(gpu_type.node_label_value)
            rows.append(
                {
                    "gpu_type": gpu_type.name,
                    "display_name": gpu_type.display_name,
                    "product": gpu_type.node_label_value,
                    "allocatable": free.allocatable,
                    "in_use": seen.in_use if seen else None,
                    "max_reserved": free.max_reserved,
                    "max_reserved_for_classes": free.for_classes,
                    "free": free.free,
                }
            )
        # The same occurrences as the capacity page, narrowed to the hubs the caller sees.
        visible = Hub.objects.visible_to(request.user, as_admin=admin_powers(request))
        held = classes.reservations(_utc_midnight(start), _utc_midnight(end + ONE_DAY), visible)
        data = {"start": start, "end": end, "gpu_types": rows, "class_reservations": held}
        return Response(s.CapacitySerializer(data).data)


ONE_DAY = timedelta(days=1)


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)
