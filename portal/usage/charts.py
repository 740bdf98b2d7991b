"""Server-side SVG charts (pygal) of usage, cost and GPU capacity, inlined in the pages.

The SVG carries no script and no inline style, so it renders under a strict Content Security
Policy and without JavaScript: pygal's config <script> and its <style> are stripped, and the
stylesheet pygal would have inlined is served once from our own origin (`chart_css()`, see
views.chart_css). Every chart comes with the numbers it plots (`Chart.rows`) for a table.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING
from xml.etree import ElementTree

import pygal
from django.core.cache import cache
from django.utils.safestring import SafeString, mark_safe
from pygal.style import Style

if TYPE_CHECKING:
    from portal.usage.capacity import TimelineDay

Number = Decimal | int | float

# Rendered charts are cached this long (the collector adds usage every few minutes).
CACHE_SECONDS = 300
# Periods longer than this are drawn as stacked areas instead of bars.
AREA_AFTER_DAYS = 31

# Chart kinds; each has its own palette and a CSS class `hod-chart-<kind>`.
USAGE = "usage"
CAPACITY = "capacity"

_FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'
_BASE_STYLE = {
    "background": "transparent",
    "plot_background": "#ffffff",
    "foreground": "#333333",
    "foreground_strong": "#1f2933",
    "foreground_subtle": "#8a94a0",
    "font_family": _FONT,
    "label_font_size": 12,
    "major_label_font_size": 12,
    "legend_font_size": 13,
    "title_font_size": 15,
    "opacity": ".85",
    "opacity_hover": ".95",
    "guide_stroke_color": "#d5dbe1",
    "major_guide_stroke_color": "#c0c8d0",
    "guide_stroke_dasharray": "2,3",
    "major_guide_stroke_dasharray": "2,3",
}
# Usage: CPU, memory, storage, then GPU types (Tableau 10, readable for most colour vision).
USAGE_COLORS = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
    "#ff9da7",
    "#bab0ac",
)
# Capacity: reserved by hubs, the request (when shown), allocatable (the line, drawn last:
# pygal puts secondary series after the primary ones). Without a request the line is second.
_RESERVED, _REQUEST, _LINE = "#4e79a7", "#f28e2b", "#1f2933"
CAPACITY_PLAIN = "capacity-plain"
# Usage charts of one resource start the palette at that resource's colour, so a resource has
# the same colour in the cost chart and in its own usage chart: usage-0 (CPU) .. usage-3 (GPUs).
RESOURCE_OFFSETS = {"cpu": 0, "memory": 1, "storage": 2, "gpu": 3}


def usage_kind(resource: str) -> str:
    """The chart kind whose palette starts at `resource`'s colour (cpu, memory, storage, gpu)."""
    return f"{USAGE}-{RESOURCE_OFFSETS[resource]}"


_STYLES = {
    USAGE: Style(colors=USAGE_COLORS, **_BASE_STYLE),
    **{
        f"{USAGE}-{offset}": Style(
            colors=USAGE_COLORS[offset:] + USAGE_COLORS[:offset], **_BASE_STYLE
        )
        for offset in RESOURCE_OFFSETS.values()
    },
    CAPACITY: Style(colors=(_RESERVED, _REQUEST, _LINE), **_BASE_STYLE),
    CAPACITY_PLAIN: Style(colors=(_RESERVED, _LINE), **_BASE_STYLE),
}
_COMMON = {
    "js": [],  # never load pygal's tooltip script from the internet
    "disable_xml_declaration": True,
    "width": 960,
    "height": 360,
    "explicit_size": False,
    "legend_at_bottom": True,
    "legend_at_bottom_columns": 5,
    "show_minor_x_labels": False,
    "truncate_legend": 40,
    "truncate_label": -1,
    "margin": 12,
    "margin_bottom": 24,
    "spacing": 12,
    "print_values": False,
}


@dataclass(frozen=True)
class Chart:
    """A rendered chart: inline SVG markup plus the numbers it shows, for a table."""

    svg: SafeString
    title: str
    columns: list[str]
    rows: list[tuple[str, list[str]]] = field(default_factory=list)
    summary: str = ""


def _number(value: Number | None) -> float:
    return float(value or 0)


def _fmt(value: Number | None, places: int = 2) -> str:
    return f"{Decimal(str(value or 0)).quantize(Decimal(1).scaleb(-places)):,}"


def _day_label(day: datetime.date) -> str:
    return day.strftime("%b %d").replace(" 0", " ")


def _major_every(count: int) -> int:
    if count <= 10:
        return 1
    if count <= 35:
        return 7
    return 14


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _strip(kind: str, label: str):
    """An xml filter: drop pygal's <script> and <style>, mark the chart up for CSS and
    screen readers (role=img with a label; the table next to it holds the numbers)."""

    def apply(root: ElementTree.Element) -> ElementTree.Element:
        for parent in list(root.iter()):
            for child in list(parent):
                # Comments have a function as their tag; pygal's name its website.
                if not isinstance(child.tag, str) or _local(child.tag) in ("script", "style"):
                    parent.remove(child)
        for element in root.iter():
            element.attrib.pop("style", None)
        root.set("class", f"{root.get('class', '')} hod-chart hod-chart-{kind}".strip())
        root.set("role", "img")
        root.set("aria-label", label)
        root.set("preserveAspectRatio", "xMinYMin meet")
        return root

    return apply


def _render(
    build: Callable[[], pygal.graph.graph.Graph], kind: str, label: str, data: object
) -> SafeString:
    """Render the chart `build()` makes, or take it from the cache: pygal needs ~1 ms a bar, and
    the same figures are asked for again until the next collection pass changes them."""
    key = "usage-chart:" + hashlib.sha256(repr((kind, label, data)).encode()).hexdigest()
    svg = cache.get(key)
    if svg is None:
        chart = build()
        chart.add_xml_filter(_strip(kind, label))
        svg = chart.render(is_unicode=True)
        cache.set(key, svg, CACHE_SECONDS)
    # ElementTree escapes every label and number pygal puts in the markup.
    return mark_safe(svg)


def _chart(cls, kind: str, **config) -> pygal.graph.graph.Graph:
    return cls(style=_STYLES[kind], **{**_COMMON, **config})


def stacked_by_resource(
    days: Sequence[datetime.date],
    series: Mapping[str, Sequence[Number | None]],
    *,
    title: str,
    unit: str,
    kind: str = USAGE,
    height: int = 360,
) -> Chart:
    """A stacked bar chart of one quantity (cost, or usage) per day, one stack per resource.

    `series` maps a resource name ("CPU", "Memory", "GPU NVIDIA A100", ...) to one value per day;
    `kind` picks the palette (see usage_kind()).
    """
    days = list(days)
    numbers = {name: [_number(v) for v in values] for name, values in series.items()}

    def build() -> pygal.graph.graph.Graph:
        # Bars for a month or less; a stacked area beyond (a bar costs pygal ~1 ms to draw).
        area = len(days) > AREA_AFTER_DAYS
        chart = _chart(
            pygal.StackedLine if area else pygal.StackedBar,
            kind,
            height=height,
            x_labels_major_every=_major_every(len(days)),
            y_title=unit,
            show_legend=bool(series),
            min_scale=4,
            max_scale=8,
            value_formatter=lambda v: f"{v:,.2f}".rstrip("0").rstrip("."),
            **({"fill": True, "show_dots": False, "include_x_axis": True} if area else {}),
        )
        chart.x_labels = [_day_label(day) for day in days]
        for name, values in numbers.items():
            chart.add(name, values)
        return chart

    totals = {name: sum(_number(v) for v in values) for name, values in series.items()}
    grand = sum(totals.values())
    if series:
        parts = ", ".join(f"{name} {_fmt(total)}" for name, total in totals.items())
        summary = f"{_fmt(grand)} {unit} over {len(days)} days: {parts}."
    else:
        summary = f"No usage recorded in these {len(days)} days."
    rows = [
        (
            day.isoformat(),
            [_fmt(values[i]) for values in series.values()]
            + [_fmt(sum(_number(values[i]) for values in series.values()))],
        )
        for i, day in enumerate(days)
    ]
    return Chart(
        svg=_render(build, kind, f"{title}: {summary}", (days, numbers, unit, height)),
        title=title,
        columns=["Day", *series.keys(), "Total"],
        rows=rows,
        summary=summary,
    )


def capacity_timeline(
    days: Sequence[datetime.date],
    allocatable: Sequence[int | None],
    reserved: Sequence[int],
    *,
    title: str,
    request: Sequence[int] | None = None,
    request_label: str = "This request",
) -> Chart:
    """GPUs of one type per day: allocatable as a line (none while unknown), reserved by hubs
    stacked as areas and, when given, the request's GPUs stacked on top over its period.

    Days are drawn as steps (two points per day) so a reservation starts and ends on its dates.
    """
    days = list(days)
    request = list(request) if request is not None else None
    known = bool(days) and all(a is not None for a in allocatable)
    stacked = [r + (request[i] if request else 0) for i, r in enumerate(reserved)]
    peak = max([*(a or 0 for a in allocatable), *stacked], default=0)
    top = max(1, peak + max(1, peak // 8))
    # Two x positions per day (its start and its end) make flat steps.
    labels = []
    for day in days:
        labels += [_day_label(day), ""]
    kind = CAPACITY if request is not None else CAPACITY_PLAIN

    def steps(values: Sequence[int]) -> list[int]:
        return [v for v in values for _ in (0, 1)]

    def build() -> pygal.graph.graph.Graph:
        chart = _chart(
            pygal.StackedLine,
            kind,
            fill=True,
            show_dots=False,
            range=(0, top),
            secondary_range=(0, top),
            include_x_axis=True,
            x_labels_major=[_day_label(d) for i, d in enumerate(days) if i % 7 == 0],
            y_title="GPUs",
            min_scale=2,
            max_scale=8,
            value_formatter=lambda v: f"{v:g}",
        )
        chart.x_labels = labels
        chart.add("Reserved by hubs", steps(reserved))
        if request is not None:
            chart.add(request_label, steps(request))
        if known:
            # A secondary series is not stacked on the others: a line at the allocatable count.
            chart.add("Allocatable", steps(allocatable), secondary=True, fill=False)
        return chart

    free = [None if a is None else a - r for a, r in zip(allocatable, reserved, strict=True)]
    columns = ["Day", "Allocatable", "Reserved", "Free"]
    if request is not None:
        columns.append(request_label)
    rows = [
        (
            day.isoformat(),
            [_count(allocatable[i]), str(reserved[i]), _count(free[i])]
            + ([str(request[i])] if request is not None else []),
        )
        for i, day in enumerate(days)
    ]
    if not days:
        summary = "No days to show."
    elif not known:
        summary = (
            f"Allocatable unknown (no collection pass has counted these GPUs yet); at most "
            f"{max(reserved)} reserved from {days[0].isoformat()} to {days[-1].isoformat()}."
        )
    else:
        summary = (
            f"{allocatable[-1]} allocatable; at least {min(free)} free on every day from "
            f"{days[0].isoformat()} to {days[-1].isoformat()}."
        )
    return Chart(
        svg=_render(
            build,
            kind,
            f"{title}: {summary}",
            (days, list(allocatable), list(reserved), request, request_label),
        ),
        title=title,
        columns=columns,
        rows=rows,
        summary=summary,
    )


def _count(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def gpu_timeline(
    title: str,
    days: Sequence[TimelineDay],
    *,
    request_gpus: int = 0,
    request_start: datetime.date | None = None,
    request_end: datetime.date | None = None,
    request_label: str = "This request",
) -> Chart:
    """capacity_timeline() of capacity.timeline() days; with a request, its GPUs over its dates."""
    request = None
    if request_start and request_end:
        request = [request_gpus if request_start <= day.day <= request_end else 0 for day in days]
    return capacity_timeline(
        [day.day for day in days],
        [day.allocatable for day in days],
        [day.reserved for day in days],
        title=title,
        request=request,
        request_label=request_label,
    )


# --- The stylesheet pygal would have inlined ----------------------------------------------------


@functools.cache
def chart_css() -> str:
    """pygal's CSS for every chart kind, scoped to `.hod-chart-<kind>`, plus our additions."""
    parts = []
    for kind, style in _STYLES.items():
        captured: list[str] = []

        def capture(root: ElementTree.Element, captured=captured) -> ElementTree.Element:
            for element in root.iter():
                if isinstance(element.tag, str) and _local(element.tag) == "style":
                    captured.append(element.text or "")
            return root

        probe = pygal.Line(style=style, js=[], disable_xml_declaration=True)
        probe.add_xml_filter(capture)
        for index in range(len(style.colors)):
            probe.add(f"s{index}", [index])
        probe.render(is_unicode=True)
        css = "\n".join(captured)
        css = re.sub(rf"#chart-{re.escape(probe.uuid)}\b", f".hod-chart-{kind}", css)
        parts.append(css)
    parts.append(_EXTRA_CSS)
    return "\n".join(parts)


_EXTRA_CSS = """
.hod-chart { width: 100%; height: auto; max-width: 960px; display: block; }
.hod-chart .tooltip { display: none; }
.hod-chart-capacity .serie-2 .line, .hod-chart-capacity-plain .serie-1 .line {
  stroke-width: 3px; stroke-dasharray: 8,4; }
"""
