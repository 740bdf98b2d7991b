"""Template tags that put usage figures on pages whose views belong to other apps."""

from datetime import timedelta

from django import template

from portal.hubs.lifecycle import State
from portal.hubs.models import GpuType, Hub
from portal.usage import capacity, charts, queries
from portal.usage.forms import CHART_MAX_DAYS
from portal.usage.views import TIMELINE_WEEKS, capacity_panels

register = template.Library()

SUMMARY_DAYS = 30
# Hubs in these states never ran: no usage to sum up.
NOT_STARTED = (State.PENDING, State.REJECTED, State.CANCELLED)


@register.inclusion_tag("usage/_hub_summary.html", takes_context=True)
def hub_usage_summary(context: template.Context, hub: Hub) -> dict:
    """The cost of a hub over the last 30 days as the viewer may see it, with a link."""
    user = context["request"].user
    if hub.state in NOT_STARTED:
        return {"hub": hub, "show": False}
    report = queries.hub_usage(hub, user, queries.last_days(SUMMARY_DAYS))
    return {
        "show": True,
        "hub": hub,
        "report": report,
        "days": SUMMARY_DAYS,
        "sees_all": queries.sees_all_users(hub, user),
    }


@register.inclusion_tag("usage/_capacity_panels.html")
def gpu_capacity_panels() -> dict:
    """Every enabled GPU type's capacity timeline over the coming weeks (admin pages)."""
    return {"capacity": capacity_panels()}


@register.inclusion_tag("hubs/_capacity_request.html", takes_context=True)
def hub_capacity_check(context: template.Context, hub: Hub, revision=None) -> dict:
    """Whether a pending hub's GPUs fit over its dates, with its request on the timeline; with
    a pending change (`revision`, `hub` then the hub as the change would make it), whether the
    change's GPUs fit, the hub's own reservation left out. Over capacity, the admin's override
    form approves the request or the change."""
    wanted = capacity.reserved_gpus(hub)
    key = f"{hub.pk}-{revision.number}" if revision else str(hub.pk)
    result = {
        "hub": hub,
        "revision": revision,
        "key": key,
        "wanted": wanted,
        "csrf_token": context.get("csrf_token"),
    }
    if not wanted:
        return result
    free = capacity.free_over(hub.gpu_type, hub.start_date, hub.end_date, exclude=[hub.pk])
    first = queries.today()
    first = min(first, hub.start_date)
    last = max(hub.end_date, first + timedelta(days=7 * TIMELINE_WEEKS - 1))
    last = min(last, first + timedelta(days=CHART_MAX_DAYS - 1))
    total = capacity.allocatable(hub.gpu_type)
    days = [
        capacity.TimelineDay(day, total, reserved)
        for day, reserved in capacity.reserved_by_day(
            hub.gpu_type, first, last, exclude=[hub.pk]
        ).items()
    ]
    result.update(
        free=free,
        free_count=None if free.free is None else max(free.free, 0),
        fits=free.fits(wanted),
        chart=charts.gpu_timeline(
            f"{hub.gpu_type.display_name} GPUs with {hub.display_name}",
            days,
            request_gpus=wanted,
            request_start=hub.start_date,
            request_end=hub.end_date,
            request_label=hub.slug,
        ),
    )
    return result


@register.simple_tag(takes_context=True)
def gpu_label(context: template.Context, name: str) -> str:
    """A GPU type's display name from its catalogue name (the reports key GPU hours by it)."""
    names = context.get("gpu_names")
    if names is None:
        names = dict(GpuType.objects.values_list("name", "display_name"))
        context["gpu_names"] = names
    return names.get(name, name)
