"""The request form's capacity and cost estimate: free GPUs of the chosen type over the chosen
dates, whether the request fits, and what it will cost, before anything is submitted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from django import forms
from django.db.models import Q

from portal.hubs.forms import MAX_PERIOD_DAYS
from portal.hubs.models import GpuType, HardwareOption, Hub
from portal.usage import capacity, charts
from portal.usage.queries import today

# The capacity chart of a request shows its dates with a week either side, at most this long.
CHART_MAX_DAYS = 182
CHART_MARGIN_DAYS = 7

# Form fields whose posted values are lists.
_LIST_FIELDS = ("hardware_options", "images", "storage_options")
_BOOLEAN_FIELDS = ("wipe_home_allowed", "jobs_access")


class EstimateForm(forms.Form):
    """The fields of a hub request that decide its GPUs and its cost (names as in the form)."""

    start_date = forms.DateField()
    end_date = forms.DateField()
    expected_users = forms.IntegerField(min_value=1, max_value=5000)
    notebooks_per_user = forms.IntegerField(min_value=1, max_value=10, required=False)
    hardware_options = forms.ModelMultipleChoiceField(
        queryset=HardwareOption.objects.all(), to_field_name="name", required=False
    )
    gpu_type = forms.ModelChoiceField(
        queryset=GpuType.objects.all(), to_field_name="name", required=False
    )
    gpus_per_user = forms.IntegerField(min_value=0, max_value=8, required=False)
    max_gpus = forms.IntegerField(min_value=0, max_value=10000, required=False, label="GPU seats")
    home_size_gib = forms.IntegerField(min_value=0, max_value=1000, required=False)
    shared_volume_gib = forms.IntegerField(min_value=0, max_value=10000, required=False)

    def __init__(self, *args, hub: Hub | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # What the request form offers: enabled entries, plus those the hub already uses.
        for name, model in (("hardware_options", HardwareOption), ("gpu_type", GpuType)):
            enabled = Q(enabled=True) | (Q(hubs=hub) if hub is not None else Q(pk__in=[]))
            self.fields[name].queryset = model.objects.filter(enabled).distinct()

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("start_date"), data.get("end_date")
        if start and end:
            if end < start:
                self.add_error("end_date", "The end date must be on or after the start date.")
            elif (end - start).days + 1 > MAX_PERIOD_DAYS:
                self.add_error("end_date", f"At most {MAX_PERIOD_DAYS} days can be requested.")
        return data


@dataclass(frozen=True)
class RequestEstimate:
    """What the form shows: the GPUs' fit over the period and the estimated cost."""

    errors: list[str] = field(default_factory=list)
    start: date | None = None
    end: date | None = None
    gpu_type: GpuType | None = None
    wanted_gpus: int = 0
    free: capacity.FreeGpus | None = None
    cost: capacity.CostEstimate | None = None
    chart: charts.Chart | None = None

    @property
    def fits(self) -> bool | None:
        """True or False for a GPU request with known capacity; None when nothing to check."""
        if self.free is None or self.free.free is None or not self.wanted_gpus:
            return None
        return self.free.fits(self.wanted_gpus)

    @property
    def free_now(self) -> int | None:
        """GPUs free over the whole period, never below zero."""
        if self.free is None or self.free.free is None:
            return None
        return max(self.free.free, 0)


def posted_initial(data: Mapping) -> dict:
    """The posted request as a form's initial values, to show it again without errors."""
    initial: dict = {}
    for key in data:
        if key in ("csrfmiddlewaretoken", "check"):
            continue
        if key in _LIST_FIELDS:
            initial[key] = data.getlist(key) if hasattr(data, "getlist") else data[key]
        elif key in _BOOLEAN_FIELDS:
            initial[key] = str(data[key]).lower() in ("1", "true", "on", "yes")
        else:
            initial[key] = data[key]
    for key in _BOOLEAN_FIELDS:
        initial.setdefault(key, False)
    return initial


def _request_timeline(
    gpu_type: GpuType, start: date, end: date, exclude: list[int]
) -> list[capacity.TimelineDay]:
    first = max(start - timedelta(days=CHART_MARGIN_DAYS), today())
    first = min(first, start)
    last = min(end + timedelta(days=CHART_MARGIN_DAYS), first + timedelta(days=CHART_MAX_DAYS - 1))
    total = capacity.allocatable(gpu_type)
    reserved = capacity.reserved_by_day(gpu_type, first, last, exclude=exclude)
    return [capacity.TimelineDay(day, total, count) for day, count in reserved.items()]


def estimate_request(data: Mapping, hub: Hub | None = None) -> RequestEstimate:
    """Estimate a posted request (or change of `hub`, whose own reservation is not counted)."""
    form = EstimateForm(data, hub=hub)
    if not form.is_valid():
        return RequestEstimate(
            errors=[
                f"{form.fields[name].label or name.replace('_', ' ').capitalize()}: {message}"
                for name, messages in form.errors.items()
                for message in messages
            ]
        )
    cleaned = form.cleaned_data
    start, end = cleaned["start_date"], cleaned["end_date"]
    gpu_type, gpus = cleaned.get("gpu_type"), cleaned.get("gpus_per_user") or 0
    users, servers = cleaned["expected_users"], cleaned.get("notebooks_per_user") or 1
    gpus = gpus if gpu_type else 0
    seats = cleaned.get("max_gpus") or 0
    wanted = capacity.quota_gpus(users, servers, gpus, gpu_type.resource_name, seats) if gpus else 0
    exclude = [hub.pk] if hub is not None else []
    free = chart = None
    if gpu_type is not None:
        free = capacity.free_over(gpu_type, start, end, exclude=exclude)
        days = _request_timeline(gpu_type, start, end, exclude)
        chart = charts.gpu_timeline(
            f"{gpu_type.display_name} GPUs around the requested dates",
            days,
            request_gpus=wanted,
            request_start=start,
            request_end=end,
        )
    cost = capacity.estimate_cost(
        start=start,
        end=end,
        expected_users=users,
        notebooks_per_user=servers,
        hardware_options=cleaned.get("hardware_options") or [],
        gpu_type=gpu_type,
        gpus_per_user=gpus,
        max_gpus=seats,
        home_size_gib=cleaned.get("home_size_gib") or 0,
        shared_volume_gib=cleaned.get("shared_volume_gib") or 0,
    )
    return RequestEstimate(
        start=start,
        end=end,
        gpu_type=gpu_type,
        wanted_gpus=wanted,
        free=free,
        cost=cost,
        chart=chart,
    )
