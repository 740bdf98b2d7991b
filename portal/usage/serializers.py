"""API shapes of usage, cost and capacity (for validation and the OpenAPI schema)."""

from rest_framework import serializers

from portal.usage.queries import GRANULARITIES, TOTALS_BY


class PeriodQuerySerializer(serializers.Serializer):
    """Query parameters of usage reports (validated by queries.parse_period)."""

    start = serializers.DateField(required=False, help_text="First day (UTC); default 30 days ago.")
    end = serializers.DateField(
        required=False, help_text="Last day (UTC), included; default today."
    )
    granularity = serializers.ChoiceField(choices=GRANULARITIES, required=False, default="day")


class TotalsQuerySerializer(PeriodQuerySerializer):
    by = serializers.ChoiceField(choices=TOTALS_BY, required=False, default="hub")


class CostSerializer(serializers.Serializer):
    cpu = serializers.DecimalField(max_digits=16, decimal_places=2)
    memory = serializers.DecimalField(max_digits=16, decimal_places=2)
    gpu = serializers.DecimalField(max_digits=16, decimal_places=2)
    storage = serializers.DecimalField(max_digits=16, decimal_places=2)
    total = serializers.DecimalField(max_digits=16, decimal_places=2)


class AmountsSerializer(serializers.Serializer):
    cpu_core_hours = serializers.DecimalField(max_digits=20, decimal_places=4)
    memory_gib_hours = serializers.DecimalField(max_digits=20, decimal_places=4)
    gpu_hours = serializers.DictField(
        child=serializers.DecimalField(max_digits=20, decimal_places=4),
        help_text="GPU-hours by GPU type name.",
    )
    storage_gib_hours = serializers.DecimalField(max_digits=20, decimal_places=4)


class LineSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="Bucket start (ISO), username, hub slug or GPU type.")
    label = serializers.CharField()
    usage = AmountsSerializer()
    cost = CostSerializer()


class GapSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()


class UsageReportSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    granularity = serializers.ChoiceField(choices=GRANULARITIES)
    currency = serializers.CharField()
    total = LineSerializer()
    buckets = LineSerializer(many=True)
    by_user = LineSerializer(many=True)
    by_hub = LineSerializer(many=True)
    gaps = GapSerializer(many=True, help_text="Intervals with no usage recorded.")


class TotalsSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    by = serializers.ChoiceField(choices=TOTALS_BY)
    currency = serializers.CharField()
    total = LineSerializer()
    lines = LineSerializer(many=True)


class CapacityQuerySerializer(serializers.Serializer):
    start = serializers.DateField(required=False, help_text="Default today.")
    end = serializers.DateField(required=False, help_text="Default start + 27 days.")


class GpuCapacitySerializer(serializers.Serializer):
    gpu_type = serializers.CharField(help_text="Catalogue name (the product when not catalogued).")
    display_name = serializers.CharField()
    product = serializers.CharField()
    allocatable = serializers.IntegerField(allow_null=True, help_text="Null: never observed.")
    in_use = serializers.IntegerField(allow_null=True)
    max_reserved = serializers.IntegerField(help_text="Most GPUs reserved on a day of the period.")
    max_reserved_for_classes = serializers.IntegerField(
        help_text="Of max_reserved, the GPUs held for class sessions on that day."
    )
    free = serializers.IntegerField(allow_null=True, help_text="Free on every day of the period.")


class ClassReservationSerializer(serializers.Serializer):
    """Room held for one occurrence of a class session (placeholder servers)."""

    hub = serializers.IntegerField(source="session.hub_id")
    hub_slug = serializers.CharField(source="session.hub.slug")
    session = serializers.IntegerField(source="session.pk")
    title = serializers.CharField(source="session.title")
    starts = serializers.DateTimeField(help_text="When the session starts.")
    ends = serializers.DateTimeField()
    held_from = serializers.DateTimeField(
        help_text="When its placeholders are made (WARM_LEAD_MINUTES before it starts)."
    )
    time_zone = serializers.CharField(source="session.time_zone")
    attendees = serializers.IntegerField(source="session.attendees")
    servers = serializers.IntegerField(help_text="Placeholders without a GPU.")
    gpu_servers = serializers.IntegerField(help_text="Placeholders with the hub's GPUs.")
    gpu_type = serializers.CharField(
        source="session.hub.gpu_type.name", allow_null=True, help_text="Null: no GPUs."
    )
    gpus = serializers.IntegerField(help_text="GPUs the placeholders hold.")
    decision = serializers.ChoiceField(
        source="session.decision",
        choices=["as asked", "capped", "refused"],
        help_text="An admin's decision on the room asked for.",
    )
    max_placeholders = serializers.IntegerField(
        source="session.max_placeholders", allow_null=True, help_text="An admin's cap."
    )


class CapacitySerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    gpu_types = GpuCapacitySerializer(many=True)
    class_reservations = ClassReservationSerializer(
        many=True,
        help_text="Room held for classes during the period (UTC days), in order: every hub's "
        "for a portal admin, otherwise only those of the hubs the caller sees.",
    )
