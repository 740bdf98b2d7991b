"""Usage, cost and GPU capacity pages: a hub's usage, my usage, the admin's totals and capacity.

Thin: authorise, read through portal.usage.queries / capacity, turn the figures into charts
(portal.usage.charts) and tables, render. Every chart is inline SVG with a table beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_GET

from portal.hubs import classes, server_policy
from portal.hubs.models import GpuType, Hub
from portal.hubs.views import staff_required
from portal.usage import capacity, charts, queries
from portal.usage.forms import estimate_request
from portal.usage.prices import ZERO, currency

# The periods the pages offer, in days; anything else falls back to the default.
PERIODS = (7, 30, 90)
DEFAULT_DAYS = 30
TOP_USERS = 10
TIMELINE_WEEKS = 8


def chosen_days(request: HttpRequest) -> int:
    """The `?days=` of the request if it is one of PERIODS, else DEFAULT_DAYS."""
    try:
        days = int(request.GET.get("days", DEFAULT_DAYS))
    except (TypeError, ValueError):
        return DEFAULT_DAYS
    return days if days in PERIODS else DEFAULT_DAYS


def _period_links(request: HttpRequest, days: int) -> list[dict]:
    links = []
    for option in PERIODS:
        query = request.GET.copy()
        query["days"] = str(option)
        links.append({"days": option, "query": query.urlencode(), "current": option == days})
    return links


# --- Turning reports into chart series ----------------------------------------------------------


def _gpu_products() -> dict[str, GpuType]:
    """GPU types by catalogue name (the reports name GPU types by it)."""
    return {gpu.name: gpu for gpu in GpuType.objects.all()}


def _gpu_label(name: str, types: dict[str, GpuType]) -> str:
    gpu = types.get(name)
    return f"GPU {gpu.display_name if gpu else name}"


def cost_series(report: queries.UsageReport) -> dict[str, list[Decimal]]:
    """Cost per bucket of a report split into CPU, memory, storage and each GPU type."""
    types = _gpu_products()
    gpu_names = sorted({name for line in report.buckets for name in line.cost.gpu_by_type})
    series: dict[str, list[Decimal]] = {
        "CPU": [line.cost.cpu for line in report.buckets],
        "Memory": [line.cost.memory for line in report.buckets],
        "Storage": [line.cost.storage for line in report.buckets],
    }
    for name in gpu_names:
        series[_gpu_label(name, types)] = [
            line.cost.gpu_by_type.get(name, ZERO) for line in report.buckets
        ]
    # CPU, memory and storage stay even when zero, so each resource keeps its colour.
    return series


def usage_series(
    report: queries.UsageReport,
) -> list[tuple[str, str, str, dict[str, list[Decimal]]]]:
    """Usage per day as (resource, title, unit, series) per resource that was used at all."""
    types = _gpu_products()
    gpu_names = sorted({name for line in report.buckets for name in line.usage.gpu_hours})
    kinds = [
        ("cpu", "CPU", "core-hours", {"CPU": [b.usage.cpu_core_hours for b in report.buckets]}),
        (
            "memory",
            "Memory",
            "GiB-hours",
            {"Memory": [b.usage.memory_gib_hours for b in report.buckets]},
        ),
        (
            "gpu",
            "GPUs",
            "GPU-hours",
            {
                _gpu_label(name, types): [b.usage.gpu_hours.get(name, ZERO) for b in report.buckets]
                for name in gpu_names
            },
        ),
        (
            "storage",
            "Storage",
            "GiB-hours",
            {"Storage": [b.usage.storage_gib_hours for b in report.buckets]},
        ),
    ]
    return [kind for kind in kinds if any(any(values) for values in kind[3].values())]


@dataclass(frozen=True)
class UsageCharts:
    """The charts of a usage report: cost stacked by resource, and the usage of one resource
    (`resource`), with links to the others that were used (`resources`)."""

    cost: charts.Chart
    usage: charts.Chart | None
    resource: str
    resources: list[dict]


def report_charts(report: queries.UsageReport, request: HttpRequest) -> UsageCharts:
    """Render the cost chart and the usage chart of the resource `?usage=` names (GPUs when
    they were used, else CPU; one at a time keeps a 90-day page fast)."""
    days = [date.fromisoformat(line.key[:10]) for line in report.buckets]
    cost = charts.stacked_by_resource(
        days,
        cost_series(report),
        title=f"Cost per day ({report.currency})",
        unit=report.currency,
    )
    kinds = {kind[0]: kind for kind in usage_series(report)}
    wanted = request.GET.get("usage", "")
    resource = (
        wanted
        if wanted in kinds
        else next((name for name in ("gpu", "cpu", "memory", "storage") if name in kinds), "")
    )
    usage = None
    if resource:
        _, title, unit, series = kinds[resource]
        usage = charts.stacked_by_resource(
            days,
            series,
            title=f"{title} per day ({unit})",
            unit=unit,
            kind=charts.usage_kind(resource),
            height=280,
        )
    links = []
    for name, title, _, _ in kinds.values():
        query = request.GET.copy()
        query["usage"] = name
        links.append({"title": title, "query": query.urlencode(), "current": name == resource})
    return UsageCharts(cost=cost, usage=usage, resource=resource, resources=links)


def _period_context(request: HttpRequest, days: int) -> dict:
    period = queries.last_days(days)
    return {
        "period": period,
        "days": days,
        "period_links": _period_links(request, days),
        "gpu_names": dict(GpuType.objects.values_list("name", "display_name")),
    }


# --- Pages --------------------------------------------------------------------------------------


@login_required
@require_GET
def hub_usage(request: HttpRequest, pk: int) -> HttpResponse:
    """A hub's usage and cost over the last 7/30/90 days: owners see everyone, members
    themselves; others get 404 like every hub page."""
    hub = get_object_or_404(Hub.objects.visible_to(request.user).select_related("owner"), pk=pk)
    context = _period_context(request, chosen_days(request))
    report = queries.hub_usage(hub, request.user, context["period"])
    sees_all = queries.sees_all_users(hub, request.user)
    context.update(
        hub=hub,
        report=report,
        charts=report_charts(report, request),
        sees_all=sees_all,
        top_users=report.by_user[:TOP_USERS],
        csv_url=_api_url("hub-usage-csv", hub.pk, days=context["days"]) if sees_all else "",
        # What the server policy saved, and the GPU time still held while idle (whole hub).
        server_policy=server_policy.savings(
            hub,
            datetime.combine(context["period"].start, time.min, UTC),
        )
        if sees_all
        else None,
    )
    return render(request, "usage/hub_usage.html", context)


@login_required
@require_GET
def my_usage(request: HttpRequest) -> HttpResponse:
    """The signed-in user's own usage and cost across all their hubs."""
    context = _period_context(request, chosen_days(request))
    report = queries.user_usage(request.user, context["period"])
    hubs = {
        str(hub.pk): hub
        for hub in Hub.objects.filter(pk__in=[line.key for line in report.by_hub if line.key])
    }
    context.update(
        report=report,
        charts=report_charts(report, request),
        by_hub=[(line, hubs.get(line.key)) for line in report.by_hub],
    )
    return render(request, "usage/my_usage.html", context)


@staff_required
@require_GET
def usage_admin(request: HttpRequest) -> HttpResponse:
    """Admins: totals per hub, owner and GPU type, with CSV export, and GPU capacity."""
    context = _period_context(request, chosen_days(request))
    period = context["period"]
    totals = []
    for by, noun in (("hub", "hub"), ("owner", "owner"), ("gpu_type", "GPU type")):
        lines, total = queries.admin_totals(period, by)
        totals.append(
            {
                "by": by,
                "title": f"Per {noun}",
                "noun": noun,
                "lines": lines,
                "total": total,
                "csv_url": _api_url("usage-totals-csv", by=by, days=context["days"]),
            }
        )
    context.update(
        totals=totals,
        currency=currency(),
        gaps=queries.gaps_in(period),
        capacity=capacity_panels(),
        **class_reservations(),
    )
    return render(request, "usage/admin.html", context)


def class_reservations(weeks: int = TIMELINE_WEEKS) -> dict:
    """Every room held for a class over the coming weeks (admins' capacity view)."""
    now = timezone.now()
    return {
        "class_reservations": classes.reservations(now, now + timedelta(weeks=weeks)),
        "warm_lead_minutes": settings.WARM_LEAD_MINUTES,
    }


@cache_control(max_age=24 * 3600, public=True)
@require_GET
def chart_css(request: HttpRequest) -> HttpResponse:
    """The charts' stylesheet (pygal's CSS, served from our origin instead of inline)."""
    return HttpResponse(charts.chart_css(), content_type="text/css; charset=utf-8")


# --- GPU capacity (admin page, approval queue, request form) ------------------------------------


@dataclass(frozen=True)
class CapacityPanel:
    """One GPU type: what the cluster has now and its timeline over the coming weeks."""

    gpu_type: GpuType
    allocatable: int | None
    in_use: int | None
    chart: charts.Chart
    hubs: list[tuple[Hub, int]]


def capacity_panels(gpu_types: list[GpuType] | None = None) -> list[CapacityPanel]:
    """A panel per GPU type (all enabled ones by default) over the next TIMELINE_WEEKS weeks."""
    if gpu_types is None:
        gpu_types = list(GpuType.objects.enabled().order_by("display_name"))
    now = {row.product: row for row in capacity.gpus_now()}
    start = queries.today()
    end = start + timedelta(days=7 * TIMELINE_WEEKS - 1)
    panels = []
    for gpu_type in gpu_types:
        days = capacity.timeline(gpu_type, weeks=TIMELINE_WEEKS, start=start)
        seen = now.get(gpu_type.node_label_value)
        panels.append(
            CapacityPanel(
                gpu_type=gpu_type,
                allocatable=seen.allocatable if seen else None,
                in_use=seen.in_use if seen else None,
                chart=charts.gpu_timeline(f"{gpu_type.display_name} GPUs", days),
                hubs=capacity.hubs_reserving(gpu_type, start, end),
            )
        )
    return panels


def _api_url(name: str, *args, days: int, **query) -> str:
    """The URL of one of the usage API's endpoints over the last `days` days."""
    period = queries.last_days(days)
    query.update(start=period.start.isoformat(), end=period.end.isoformat())
    return f"{reverse(name, args=args)}?{urlencode(query)}"


@login_required
@require_GET
def estimate(request: HttpRequest) -> HttpResponse:
    """The request form's capacity and cost estimate as an HTML fragment, for estimate.js;
    `?hub=` estimates a change of a hub the user manages (its own GPUs not counted)."""
    hub = None
    if request.GET.get("hub"):
        try:
            pk = int(request.GET["hub"])
        except ValueError:
            raise Http404("No such hub.") from None
        hub = get_object_or_404(Hub.objects.visible_to(request.user), pk=pk)
        if not hub.can_manage(request.user):
            raise Http404("No such hub.")
    context = {"estimate": estimate_request(request.GET, hub=hub)}
    return render(request, "usage/_estimate_body.html", context)
