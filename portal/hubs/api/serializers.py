"""API representations. Requests are type-checked here and validated by HubRequestForm."""

from collections.abc import Iterable
from typing import Any

from django.db import models
from django.db.models import Prefetch, QuerySet
from rest_framework import serializers

from portal.hubs import revisions
from portal.hubs.forms import HubRequestForm
from portal.hubs.lifecycle import HubState
from portal.hubs.models import (
    GpuType,
    HardwareOption,
    Hub,
    HubEvent,
    HubRevision,
    Image,
    Member,
    StorageOption,
)
from portal.hubs.services.policy import saved_policy_violations

# --- Catalogues ---------------------------------------------------------------------------------


class HardwareOptionSerializer(serializers.ModelSerializer):
    class Meta:
        model = HardwareOption
        fields = [
            "name",
            "display_name",
            "cpu_guarantee",
            "cpu_limit",
            "mem_guarantee_gib",
            "mem_limit_gib",
            # The server policy of the option (see the README's "Idle and lifetime policy").
            "idle_timeout_minutes",
            "max_idle_timeout_minutes",
            "gpu_idle_timeout_minutes",
            "max_age_hours",
            "gpu_max_age_hours",
            "age_extension_hours",
        ]


class GpuTypeSerializer(serializers.ModelSerializer):
    class Meta:
        model = GpuType
        fields = ["name", "display_name", "resource_name", "node_label_key", "node_label_value"]


class ImageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Image
        fields = ["name", "display_name", "reference", "interface"]


class StorageOptionSerializer(serializers.ModelSerializer):
    class Meta:
        model = StorageOption
        fields = ["name", "display_name", "kind", "read_only", "mount_path"]


# --- Hubs ---------------------------------------------------------------------------------------


# The relations a hub's representation reads, with what it reads of them. `with_representation`
# prefetches them as plain lists (Prefetch to_attr): prefetched into the relations themselves,
# they would cost a related manager and a queryset per hub and relation, built once when
# prefetching and again when serializing, more than the rows.
_RELATIONS = {
    "hardware_options": lambda: HardwareOption.objects.only("name"),
    "images": lambda: Image.objects.only("name"),
    "storage_options": lambda: StorageOption.objects.only("name"),
    "events": lambda: HubEvent.objects.select_related("actor"),
    "members": lambda: Member.objects.select_related("user"),
}


def _prefetched(relation: str) -> str:
    return f"prefetched_{relation}"


def with_representation(hubs: QuerySet[Hub]) -> QuerySet[Hub]:
    """`hubs` with what HubSerializer reads, in a fixed number of queries for any number of
    hubs. Serialize them as loaded: these lists are not refreshed by `refresh_from_db()`."""
    return hubs.select_related("owner", "gpu_type").prefetch_related(
        *(
            Prefetch(relation, queryset=queryset(), to_attr=_prefetched(relation))
            for relation, queryset in _RELATIONS.items()
        )
    )


def related_objects(hub: Hub, relation: str) -> Iterable:
    """The hub's related objects: the list `with_representation` prefetched, else the relation."""
    prefetched = getattr(hub, _prefetched(relation), None)
    return prefetched if prefetched is not None else getattr(hub, relation).all()


class PrefetchedManyRelatedField(serializers.ManyRelatedField):
    """A to-many relation read from `with_representation`'s list when the hub has one."""

    def get_attribute(self, instance: Hub) -> Iterable:
        if instance.pk is None:
            return []
        return related_objects(instance, self.source)


class PrefetchedListSerializer(serializers.ListSerializer):
    """A nested list read from `with_representation`'s list when the hub has one."""

    def get_attribute(self, instance: Hub) -> Iterable:
        return related_objects(instance, self.source)


def _names(**kwargs) -> PrefetchedManyRelatedField:
    return PrefetchedManyRelatedField(
        child_relation=serializers.SlugRelatedField(slug_field="name", read_only=True),
        read_only=True,
        **kwargs,
    )


class DateTimeField(serializers.DateTimeField):
    """DRF's DateTimeField, with the current time zone looked up once per serializer rather
    than for every value (a page of hubs holds hundreds of them)."""

    def bind(self, field_name: str, parent: serializers.BaseSerializer) -> None:
        super().bind(field_name, parent)
        self.timezone = self.default_timezone()


# ModelSerializer's field classes, with the DateTimeField above for the model's date-times.
FIELD_MAPPING = {
    **serializers.ModelSerializer.serializer_field_mapping,
    models.DateTimeField: DateTimeField,
}


class CollaboratorSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Member.Role.choices, default=Member.Role.MEMBER)


class HubEventSerializer(serializers.ModelSerializer):
    serializer_field_mapping = FIELD_MAPPING
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = HubEvent
        fields = ["from_state", "to_state", "actor", "reason", "created"]
        list_serializer_class = PrefetchedListSerializer


class HubListSerializer(serializers.ListSerializer):
    """Hubs as the API lists them: the pending ones' policy violations are read at once."""

    def to_representation(self, data: Iterable[Hub]) -> list[dict[str, Any]]:
        hubs = list(data)
        self.child.explain_pending(hubs)
        return super().to_representation(hubs)


class HubSerializer(serializers.ModelSerializer):
    """A hub as the API returns it."""

    serializer_field_mapping = FIELD_MAPPING

    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    hardware_options = _names()
    gpu_type = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    images = _names()
    storage_options = _names()
    collaborators = serializers.SerializerMethodField()
    events = HubEventSerializer(many=True, read_only=True)
    namespace = serializers.CharField(read_only=True)
    users_namespace = serializers.CharField(
        read_only=True, help_text="Where the hub's user servers and jobs run."
    )
    url = serializers.CharField(read_only=True)
    policy_violations = serializers.SerializerMethodField(
        help_text="Why a pending request waits for an admin."
    )

    class Meta:
        model = Hub
        fields = [
            "id",
            *Hub.SPEC_FIELDS,
            "collaborators",
            "owner",
            "state",
            "state_reason",
            "state_changed",
            "namespace",
            "users_namespace",
            "url",
            "policy_violations",
            "events",
            "created",
            "updated",
        ]
        read_only_fields = fields
        list_serializer_class = HubListSerializer

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._violations: dict[int, list[str]] = {}

    def get_collaborators(self, hub: Hub) -> list[dict[str, str]]:
        members = related_objects(hub, "members")
        return [{"username": c.user.username, "role": c.role} for c in members]

    def explain_pending(self, hubs: Iterable[Hub]) -> None:
        """Read the policy violations of the pending hubs among `hubs`, all at once."""
        pending = {hub.pk for hub in hubs if hub.state == HubState.PENDING}
        self._violations.update(saved_policy_violations(pending - self._violations.keys()))

    def get_policy_violations(self, hub: Hub) -> list[str]:
        if hub.state != HubState.PENDING:
            return []
        if hub.pk not in self._violations:
            self.explain_pending([hub])
        return self._violations.get(hub.pk, [])


class HubRequestSerializer(serializers.Serializer):
    """A hub request. Catalogue entries are given by name; HubRequestForm checks everything else."""

    # Only JSON types are checked here, so that the web form and the API share one validation.
    display_name = serializers.CharField(required=False, allow_blank=True)
    slug = serializers.CharField(required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    kind = serializers.CharField(required=False, help_text="course, research or workshop")
    start_date = serializers.DateField(required=False)
    end_date = serializers.DateField(required=False)
    expected_users = serializers.IntegerField(required=False)
    notebooks_per_user = serializers.IntegerField(required=False)
    hardware_options = serializers.ListField(child=serializers.CharField(), required=False)
    gpu_type = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    gpus_per_user = serializers.IntegerField(required=False, help_text="GPUs per server.")
    max_gpus = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text=(
            "GPU seats: how many GPUs the hub's users hold at once, whatever their number. "
            "Omitted or 0: users x servers per user x GPUs per server."
        ),
    )
    images = serializers.ListField(child=serializers.CharField(), required=False)
    custom_image = serializers.CharField(required=False, allow_blank=True)
    home_size_gib = serializers.IntegerField(required=False)
    wipe_home_allowed = serializers.BooleanField(required=False)
    shared_volume_gib = serializers.IntegerField(required=False)
    shared_volume_mode = serializers.CharField(required=False, help_text="none, ro or rw")
    storage_options = serializers.ListField(child=serializers.CharField(), required=False)
    idle_timeout_minutes = serializers.IntegerField(
        required=False, allow_null=True, help_text="Empty: each server option's own limit."
    )
    max_server_age_hours = serializers.IntegerField(
        required=False, allow_null=True, help_text="Empty: each server option's own limit."
    )
    jobs_access = serializers.BooleanField(required=False)
    collaborators = CollaboratorSerializer(many=True, required=False)

    def form_data(self) -> dict[str, Any]:
        """The validated JSON as the HTML form would post it, with model defaults filled in."""
        data: dict[str, Any] = {}
        for name in HubRequestForm.Meta.fields:
            model_field = Hub._meta.get_field(name)
            if name in self.validated_data:
                value = self.validated_data[name]
            elif model_field.has_default():
                value = model_field.get_default()
            else:
                continue
            if isinstance(value, list):
                data[name] = [str(item) for item in value]
            elif isinstance(value, bool):
                data[name] = "true" if value else "false"
            elif value is None:
                data[name] = ""
            else:
                data[name] = value.isoformat() if hasattr(value, "isoformat") else str(value)
        for field, role in (("co_owners", Member.Role.CO_OWNER), ("members", "member")):
            data[field] = " ".join(
                c["username"]
                for c in self.validated_data.get("collaborators", [])
                if c["role"] == role
            )
        return data


def form_errors_for_api(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """Rename form error keys to the API's field names."""
    renamed: dict[str, list[str]] = {}
    for field, messages in errors.items():
        key = {
            "__all__": "non_field_errors",
            "co_owners": "collaborators",
            "members": "collaborators",
        }
        renamed.setdefault(key.get(field, field), []).extend(messages)
    return renamed


class ReasonSerializer(serializers.Serializer):
    """An admin action's optional reason (resume, delete now)."""

    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class ApprovalSerializer(ReasonSerializer):
    """Approve a hub or a change; `override` (with a reason) approves GPUs beyond the free
    capacity."""

    override = serializers.BooleanField(required=False, default=False)


class RejectSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


# --- Revisions (changes to a running hub) -------------------------------------------------------


class HubRevisionSerializer(serializers.ModelSerializer):
    """A version of a hub's spec and its decision."""

    hub = serializers.IntegerField(source="hub_id", read_only=True)
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)
    approver = serializers.SlugRelatedField(
        slug_field="username", read_only=True, help_text="The admin who decided; null: policy."
    )
    rollback_of = serializers.SlugRelatedField(
        slug_field="number", read_only=True, help_text="The revision this one restores."
    )
    spec = serializers.JSONField(read_only=True)
    changed_fields = serializers.ListField(child=serializers.CharField(), read_only=True)
    violations = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()), read_only=True
    )

    class Meta:
        model = HubRevision
        fields = [
            "hub",
            "number",
            "state",
            "reason",
            "spec",
            "changed_fields",
            "violations",
            "author",
            "approver",
            "rollback_of",
            "created",
            "decided",
            "applied",
        ]
        read_only_fields = fields


class HubChangeSerializer(HubRequestSerializer):
    """A change to a hub: only the fields given change; the others keep their current value.

    `collaborators`, when given, replaces the hub's co-owners and members.
    """

    def form_data(self, current: dict[str, Any] | None = None) -> dict[str, Any]:
        """The hub's current spec (form-shaped) with the given fields put over it."""
        data = revisions.form_data(current or {})
        given = super().form_data()
        for name in HubRequestForm.Meta.fields:
            if name in self.validated_data:
                data[name] = given[name]
        if "collaborators" in self.validated_data:
            data["co_owners"], data["members"] = given["co_owners"], given["members"]
        return data


class FieldChangeSerializer(serializers.Serializer):
    field = serializers.CharField()
    label = serializers.CharField()
    old = serializers.CharField()
    new = serializers.CharField()


class ObjectChangeSerializer(serializers.Serializer):
    kind = serializers.CharField()
    name = serializers.CharField()
    namespace = serializers.CharField()
    change = serializers.ChoiceField(choices=["added", "removed", "changed"])
    diff = serializers.CharField(help_text="Unified diff of the object's YAML.")


class ViolationSerializer(serializers.Serializer):
    field = serializers.CharField()
    message = serializers.CharField()


class ChangePreviewSerializer(serializers.Serializer):
    """What a change would do, without saving it."""

    changed_fields = serializers.ListField(child=serializers.CharField())
    spec_diff = FieldChangeSerializer(many=True)
    object_diff = ObjectChangeSerializer(many=True)
    violations = ViolationSerializer(
        many=True, help_text="Empty: applied at once when submitted; else waits for an admin."
    )
