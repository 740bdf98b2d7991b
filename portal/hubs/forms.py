"""The hub request form: the one place that validates a spec, for the web UI and the API alike;
and the form of a hub's class sessions."""

import datetime
import re

from django import forms
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.utils import timezone

from portal.hubs.models import (
    ClassSession,
    GpuType,
    HardwareOption,
    Hub,
    Image,
    Member,
    SelfServicePolicy,
    StorageOption,
    all_servers_gpus,
)
from portal.hubs.validators import image_registry

# A hard limit, unlike the policy's max_period_days, which only decides about approval.
MAX_PERIOD_DAYS = 3 * 366


class UsernamesField(forms.CharField):
    """Usernames separated by commas, spaces or new lines; cleans to a list of users."""

    widget = forms.Textarea(attrs={"rows": 2})

    def clean(self, value):
        value = super().clean(value)
        names = list(dict.fromkeys(name for name in re.split(r"[\s,;]+", value or "") if name))
        users = {u.username: u for u in get_user_model().objects.filter(username__in=names)}
        unknown = [name for name in names if name not in users]
        if unknown:
            raise forms.ValidationError(
                "Unknown user(s): %(names)s.",
                code="unknown_user",
                params={"names": ", ".join(unknown)},
            )
        return [users[name] for name in names]


class HubRequestForm(forms.ModelForm):
    """Validate a hub request; catalogue entries are referenced by their `name`."""

    hardware_options = forms.ModelMultipleChoiceField(
        queryset=HardwareOption.objects.enabled(),
        to_field_name="name",
        widget=forms.CheckboxSelectMultiple,
        label="Server options",
        help_text="Sizes the users of the hub may pick from.",
    )
    gpu_type = forms.ModelChoiceField(
        queryset=GpuType.objects.enabled(),
        to_field_name="name",
        required=False,
        empty_label="No GPUs",
        label="GPU type",
    )
    images = forms.ModelMultipleChoiceField(
        queryset=Image.objects.enabled(),
        to_field_name="name",
        widget=forms.CheckboxSelectMultiple,
        required=False,
    )
    storage_options = forms.ModelMultipleChoiceField(
        queryset=StorageOption.objects.enabled(),
        to_field_name="name",
        widget=forms.CheckboxSelectMultiple,
        required=False,
        label="External storage",
    )
    co_owners = UsernamesField(
        required=False, label="Co-owners", help_text="Usernames; co-owners manage the hub."
    )
    members = UsernamesField(required=False, help_text="Usernames; members use the hub.")

    class Meta:
        model = Hub
        fields = list(Hub.SPEC_FIELDS)
        widgets = {
            "start_date": forms.DateInput(attrs={"type": "date"}),
            "end_date": forms.DateInput(attrs={"type": "date"}),
            "description": forms.Textarea(attrs={"rows": 3}),
        }
        labels = {
            "home_size_gib": "Home size per user (GiB)",
            "shared_volume_gib": "Shared volume size (GiB)",
            "idle_timeout_minutes": "Stop idle servers after (minutes)",
            "max_server_age_hours": "Stop servers after (hours, active or not)",
            "jobs_access": "Batch jobs through the Kubernetes API",
        }

    def __init__(self, *args, owner=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = owner
        self.policy = SelfServicePolicy.current()
        today = timezone.localdate()
        self.fields["start_date"].initial = today
        self.fields["end_date"].initial = today + datetime.timedelta(days=30)
        if not self.fields["storage_options"].queryset.exists():
            self.fields["storage_options"].help_text = "None is offered yet."
        self.fields["max_gpus"].required = False
        self.fields["hardware_options"].label_from_instance = (
            lambda o: f"{o} ({o.describe()}; {o.describe_limits()})"
        )
        self.fields["storage_options"].label_from_instance = lambda o: (
            f"{o} (only for the users and groups it names)" if o.restricted else str(o)
        )
        self.fields["images"].label_from_instance = (
            lambda i: f"{i} — {i.get_interface_display()} ({i.reference})"
        )
        if self.policy.jobs_access_needs_approval:
            self.fields[
                "jobs_access"
            ].help_text = "Needs an admin's approval. Members get it only in a tier you give it to."

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if Hub.objects.live().filter(slug=slug).exists():
            raise forms.ValidationError("This slug is already taken.", code="duplicate_slug")
        return slug

    def clean_start_date(self) -> datetime.date:
        start = self.cleaned_data["start_date"]
        if start < timezone.localdate():
            raise forms.ValidationError("The start date cannot be in the past.", code="past")
        return start

    def clean_custom_image(self) -> str:
        reference = self.cleaned_data["custom_image"].strip()
        if reference:
            registry = image_registry(reference)
            allowed = self.policy.registries
            if registry not in allowed:
                raise forms.ValidationError(
                    "Images from %(registry)s are not allowed; allowed registries: %(allowed)s.",
                    code="registry_not_allowed",
                    params={"registry": registry, "allowed": ", ".join(allowed) or "none"},
                )
        return reference

    # Storage the hub already has may stay (a change); anything else must allow the owner.
    kept_storage: frozenset[int] = frozenset()

    def clean_storage_options(self):
        options = self.cleaned_data["storage_options"]
        refused = [
            o.display_name
            for o in options
            if o.pk not in self.kept_storage and not o.allows(self.owner)
        ]
        if refused:
            raise forms.ValidationError(
                "%(options)s may be requested only by the users and IdP groups it names; ask "
                "an admin.",
                code="storage_not_allowed",
                params={"options": ", ".join(refused)},
            )
        return options

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("start_date"), data.get("end_date")
        if start and end:
            if end < start:
                self.add_error("end_date", "The end date must be on or after the start date.")
            elif (end - start).days + 1 > MAX_PERIOD_DAYS:
                self.add_error(
                    "end_date", f"A hub can be requested for at most {MAX_PERIOD_DAYS} days."
                )

        if (
            "images" in data
            and "custom_image" in data
            and not data["images"]
            and not data["custom_image"]
        ):
            self.add_error("images", "Pick at least one image or give a custom image.")

        gpu_type, gpus = data.get("gpu_type"), data.get("gpus_per_user")
        if gpu_type and gpus == 0:
            self.add_error("gpus_per_user", "Choose how many GPUs each user gets, or no GPU type.")
        elif gpus and "gpu_type" in data and not gpu_type:
            self.add_error("gpu_type", "Choose a GPU type for the GPUs.")
        self._clean_gpu_seats(data)

        size, mode = data.get("shared_volume_gib"), data.get("shared_volume_mode")
        if mode == Hub.SharedVolumeMode.NONE and size:
            self.add_error("shared_volume_gib", "Choose a mode for the shared volume, or size 0.")
        elif (
            mode in (Hub.SharedVolumeMode.READ_ONLY, Hub.SharedVolumeMode.READ_WRITE) and size == 0
        ):
            self.add_error("shared_volume_gib", "Give the shared volume a size.")

        co_owners, members = data.get("co_owners") or [], data.get("members") or []
        for field, users in (("co_owners", co_owners), ("members", members)):
            if self.owner is not None and any(u.pk == self.owner.pk for u in users):
                self.add_error(field, "You own the hub; do not list yourself.")
        if {u.pk for u in co_owners} & {u.pk for u in members}:
            self.add_error("members", "A user cannot be both co-owner and member.")
        return data

    def _clean_gpu_seats(self, data: dict) -> None:
        """GPU seats: at least one GPU server's worth, at most every server's (more are held
        to that); none without GPUs. Left empty, one set of GPUs per server (users x servers x
        GPUs per server)."""
        if "max_gpus" not in data or "gpus_per_user" not in data:
            return
        seats, gpus = data["max_gpus"] or 0, data["gpus_per_user"] or 0
        if not gpus or not data.get("gpu_type"):
            if seats:
                self.add_error("max_gpus", "GPU seats need a GPU type and GPUs per server.")
            data["max_gpus"] = 0
            return
        every = all_servers_gpus(
            data.get("expected_users") or 0, data.get("notebooks_per_user") or 1, gpus
        )
        if not seats:
            data["max_gpus"] = every
        elif seats < gpus:
            self.add_error(
                "max_gpus",
                f"{seats} GPU seats cannot hold one server with {gpus} GPUs; give at least {gpus}.",
            )
        else:
            # More seats than every server of every user can hold are never used.
            data["max_gpus"] = min(seats, every)

    def people(self) -> list[tuple]:
        """(user, role) pairs from the cleaned co_owners and members."""
        return [(u, Member.Role.CO_OWNER) for u in self.cleaned_data.get("co_owners", [])] + [
            (u, Member.Role.MEMBER) for u in self.cleaned_data.get("members", [])
        ]


class HubChangeForm(HubRequestForm):
    """Validate a change to an existing hub: the request's rules, except that the slug stays,
    dates already in the past may stay, and entries the hub uses may stay after being
    disabled in a catalogue."""

    def __init__(self, *args, hub: Hub, **kwargs):
        super().__init__(*args, owner=hub.owner, **kwargs)
        self.hub = hub
        for name in ("hardware_options", "images", "storage_options"):
            field = self.fields[name]
            model = field.queryset.model
            field.queryset = model.objects.filter(Q(enabled=True) | Q(hubs=hub)).distinct()
        self.fields["gpu_type"].queryset = GpuType.objects.filter(
            Q(enabled=True) | Q(hubs=hub)
        ).distinct()
        self.fields["slug"].widget.attrs["readonly"] = True
        self.fields["slug"].help_text = "The slug of a hub cannot change."
        self.kept_storage = frozenset(hub.storage_options.values_list("pk", flat=True))

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if slug != self.hub.slug:
            raise forms.ValidationError(
                "The slug of a hub cannot change (it names the namespace and the URL).",
                code="slug_fixed",
            )
        return slug

    def clean_start_date(self) -> datetime.date:
        start = self.cleaned_data["start_date"]
        if start != self.hub.start_date and start < timezone.localdate():
            raise forms.ValidationError("The start date cannot move into the past.", code="past")
        return start

    def clean_end_date(self) -> datetime.date:
        end = self.cleaned_data["end_date"]
        if end != self.hub.end_date and end < timezone.localdate():
            raise forms.ValidationError("The end date cannot move into the past.", code="past")
        return end


class RejectForm(forms.Form):
    """The reason an admin gives when rejecting a request."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=2000,
        help_text="Shown to the requester.",
    )


class ClassSessionForm(forms.ModelForm):
    """Declare a class session of a hub; validated by ClassSession.clean, as in the API."""

    class Meta:
        model = ClassSession
        fields = [
            "title",
            "first_day",
            "start_time",
            "duration_minutes",
            "time_zone",
            "weekly",
            "last_day",
            "attendees",
            "gpu_attendees",
        ]
        labels = {
            "first_day": "Day (weekly: the first)",
            "duration_minutes": "Duration (minutes)",
            "gpu_attendees": "Of them on GPU servers",
        }
        widgets = {
            "first_day": forms.DateInput(attrs={"type": "date"}),
            "last_day": forms.DateInput(attrs={"type": "date"}),
            "start_time": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        }

    def __init__(self, *args, hub: Hub, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance.hub = hub
        self.fields["attendees"].help_text = f"At most {hub.servers}, the hub's servers."
        if hub.gpu_servers:
            self.fields[
                "gpu_attendees"
            ].help_text = f"At most {hub.gpu_servers}, the GPU servers its seats hold."
        else:
            self.fields["gpu_attendees"].help_text = "The hub has no GPUs."
        self.fields["gpu_attendees"].required = False

    def clean_gpu_attendees(self) -> int:
        return self.cleaned_data.get("gpu_attendees") or 0
