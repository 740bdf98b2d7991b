"""Filters of the audit log, shared by the admin page and the API."""

import django_filters
from django import forms

from portal.audit.models import AuditEvent


class AuditEventFilter(django_filters.FilterSet):
    """Filter by actor, action, object, date range, source IP and channel."""

    actor = django_filters.CharFilter(
        field_name="actor_username", lookup_expr="iexact", label="Actor (username)"
    )
    action = django_filters.CharFilter(
        field_name="action", lookup_expr="startswith", label="Action (or its start, e.g. hub.)"
    )
    object_type = django_filters.CharFilter(label="Object type (e.g. hubs.hub)")
    object_id = django_filters.CharFilter(label="Object id")
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
        fields = ["actor", "action", "object_type", "object_id", "ip", "via", "since", "until"]

    def filter_ip(self, queryset, name, value):
        # An exact address; anything that is not one matches nothing (never a database error).
        import ipaddress

        try:
            ipaddress.ip_address(value.strip())
        except ValueError:
            return queryset.none()
        return queryset.filter(source_ip=value.strip())
