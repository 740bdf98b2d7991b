"""Template tags that put usage figures on pages whose views belong to other apps."""

from datetime import timedelta

from django import template

from portal.hubs import hubspec
from portal.hubs.lifecycle import NEVER_APPROVED_STATES
from portal.hubs.models import GpuType, Hub
from portal.usage import capacity, charts, queries
from portal.usage.forms import CHART_MAX_DAYS
from portal.usage.views import TIMELINE_WEEKS, capacity_panels

register = template.Library()

SUMMARY_DAYS = 30


@register.inclusion_tag("usage/_hub_summary.html", takes_context=True)
def hub_usage_summary(context: template.Context, hub: Hub) -> dict:
    """The cost of a hub over the last 30 days as the viewer may see it, with a link."""
    user = context["request"].user
    if hub.state in NEVER_APPROVED_STATES:  # never ran: no usage to sum up
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
    a pending change (`revision`), whether the hub as the change would make it fits, the hub's
    own reservation left out. Over capacity, the admin's override form approves the request or
    the change."""
    if revision:
        spec = hubspec.from_revision(hub, revision.spec)
    else:
        spec = hubspec.from_hub(hub, identities=False)
    wanted = capacity.reserved_gpus(spec)
    key = f"{hub.pk}-{revision.number}" if revision else str(hub.pk)
    result = {
        "hub": hub,
        "spec": spec,
        "revision": revision,
        "key": key,
        "wanted": wanted,
        "csrf_token": context.get("csrf_token"),
    }
    gpu_type = capacity.gpu_type_of(spec)
    if not wanted or gpu_type is None:
        return result
    start, end = spec.start_date, spec.end_date
    # As the approval checks it: the hub's own seats left out, its classes as it would hold them.
    own = capacity.as_specified(spec)
    free = capacity.free_over(gpu_type, start, end, exclude=[hub.pk], own=own)
    first = queries.today()
    first = min(first, start)
    last = max(end, first + timedelta(days=7 * TIMELINE_WEEKS - 1))
    last = min(last, first + timedelta(days=CHART_MAX_DAYS - 1))
    total = capacity.allocatable(gpu_type)
    days = [
        capacity.TimelineDay(day, total, reserved)
        for day, reserved in capacity.reserved_by_day(
            gpu_type, first, last, exclude=[hub.pk], own=own
        ).items()
    ]
    result.update(
        free=free,
        free_count=None if free.free is None else max(free.free, 0),
        fits=free.fits(wanted),
        chart=charts.gpu_timeline(
            f"{gpu_type.display_name} GPUs with {hub.display_name}",
            days,
            request_gpus=wanted,
            request_start=start,
            request_end=end,
            request_label=spec.slug,
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
