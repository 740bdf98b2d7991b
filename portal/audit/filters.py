"""Filters of the audit log, shared by the admin page and the API."""

import django_filters
from django import forms
from django.db.models import Q

from portal.audit.models import AuditEvent


class IntegerFilter(django_filters.NumberFilter):
    """A whole number (a hub's id): anything else is a field error, never a database one."""

    field_class = forms.IntegerField


class AuditEventFilter(django_filters.FilterSet):
    """Filter by actor, action, object, hub, date range, source IP and channel."""

    actor = django_filters.CharFilter(
        field_name="actor_username", lookup_expr="iexact", label="Actor (username)"
    )
    action = django_filters.CharFilter(
        field_name="action", lookup_expr="startswith", label="Action (or its start, e.g. hub.)"
    )
    object_type = django_filters.CharFilter(label="Object type (e.g. hubs.hub)")
    object_id = django_filters.CharFilter(label="Object id")
    hub = IntegerFilter(
        method="filter_hub",
        label="Hub id (the hub and everything of it)",
        min_value=1,
        max_value=2**63 - 1,
    )
    ip = django_filters.CharFilter(field_name="source_ip", method="filter_ip", label="Source IP")
    via = django_filters.ChoiceFilter(choices=AuditEvent.Via.choices)
    since = django_filters.DateFilter(
        field_name="created",
        lookup_expr="date__gte",
        label="From (date)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    until = django_filters.DateFilter(
        field_name="created",
        lookup_expr="date__lte",
        label="To (date)",
        widget=forms.DateInput(attrs={"type": "date"}),
    )

    class Meta:
        model = AuditEvent
        fields = [
            "actor",
            "action",
            "object_type",
            "object_id",
            "hub",
            "ip",
            "via",
            "since",
            "until",
        ]

    def filter_hub(self, queryset, name, value):
        # The hub itself (its transitions, ...) and the rows that name it in their details:
        # changes, members, invitations, group grants, tiers, class sessions.
        return queryset.filter(
            Q(object_type="hubs.hub", object_id=str(value)) | Q(details__hub_id=value)
        )

    def filter_ip(self, queryset, name, value):
        # An exact address; anything that is not one matches nothing (never a database error).
        import ipaddress

        try:
            ipaddress.ip_address(value.strip())
        except ValueError:
            return queryset.none()
        return queryset.filter(source_ip=value.strip())
