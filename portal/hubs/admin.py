"""Django admin: catalogues and policy are edited here; hubs are shown with their people,
revisions and events, and change only through the services (the portal's pages, the API, the
actions below)."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.formats import date_format
from django.utils.html import format_html

from portal.audit.log import record
from portal.hubs import queue
from portal.hubs.lifecycle import SYNCED_STATES, LifecycleError
from portal.hubs.models import (
    ClassSession,
    GpuType,
    GroupGrant,
    HardwareOption,
    Hub,
    HubEvent,
    HubRevision,
    Image,
    Invitation,
    LoginClient,
    Member,
    MemberTier,
    SelfServicePolicy,
    StorageOption,
)
from portal.hubs.services import changes, decisions


@admin.register(HardwareOption)
class HardwareOptionAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "display_name",
        "cpu_guarantee",
        "cpu_limit",
        "mem_guarantee_gib",
        "mem_limit_gib",
        "idle_timeout_minutes",
        "gpu_idle_timeout_minutes",
        "max_age_hours",
        "gpu_max_age_hours",
        "enabled",
    ]
    list_editable = ["enabled"]


@admin.register(GpuType)
class GpuTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "resource_name", "node_label_value", "enabled"]
    list_editable = ["enabled"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "reference", "interface", "pod_security", "enabled"]
    list_filter = ["interface", "enabled"]
    list_editable = ["enabled"]


@admin.register(StorageOption)
class StorageOptionAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "kind", "server", "path", "storage_class", "enabled"]
    list_editable = ["enabled"]
    filter_horizontal = ["allowed_users"]


@admin.register(SelfServicePolicy)
class SelfServicePolicyAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "max_expected_users",
        "max_cpu_limit",
        "max_gpus_per_user",
        "max_gpus_per_hub",
    ]

    def has_add_permission(self, request) -> bool:
        # Only the first row is used; edit it rather than adding another.
        return not SelfServicePolicy.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    """A hub's records shown on its admin page; they change through the portal's services."""

    extra = 0
    can_delete = False

    def get_readonly_fields(self, request, obj=None):
        return self.fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class CollaboratorInline(ReadOnlyInline):
    """People change on the hub's members page, which also updates the running hub."""

    model = Member
    fields = ["user", "role", "tier"]


class MemberTierInline(ReadOnlyInline):
    model = MemberTier
    fields = ["name", "description", "gpu_access", "shared_access", "jobs_access", "is_default"]


class InvitationInline(ReadOnlyInline):
    model = Invitation
    fields = [
        "email",
        "role",
        "tier",
        "anyone_with_link",
        "invited_by",
        "created",
        "expires_at",
        "revoked_at",
        "accepted_by",
        "accepted_at",
    ]


class GroupGrantInline(ReadOnlyInline):
    model = GroupGrant
    fields = ["group", "role", "tier", "created_by", "created"]


class HubEventInline(ReadOnlyInline):
    model = HubEvent
    fields = ["created", "from_state", "to_state", "actor", "reason"]


class HubRevisionInline(ReadOnlyInline):
    model = HubRevision
    fields = ["number", "state", "changed_fields", "author", "approver", "created", "applied"]
    show_change_link = True


@admin.register(HubRevision)
class HubRevisionAdmin(admin.ModelAdmin):
    """Changes to hubs; decided through the services, like in the portal's approval queue."""

    list_display = ["hub", "number", "state", "author", "approver", "created", "applied"]
    list_filter = ["state"]
    search_fields = ["hub__slug", "author__username"]
    readonly_fields = [field.name for field in HubRevision._meta.fields]
    actions = ["approve_selected"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Approve and apply selected changes")
    def approve_selected(self, request, queryset) -> None:
        for revision in queryset.select_related("hub"):
            try:
                changes.approve_change(revision, request.user)
            except LifecycleError as error:
                self.message_user(request, f"{revision}: {error}", messages.WARNING)
            else:
                self.message_user(request, f"{revision.hub.slug} #{revision.number}: applied.")


@admin.register(Hub)
class HubAdmin(admin.ModelAdmin):
    list_display = ["slug", "display_name", "owner", "state", "start_date", "end_date", "created"]
    list_filter = ["state", "kind"]
    search_fields = ["slug", "display_name", "owner__username"]
    inlines = [
        CollaboratorInline,
        MemberTierInline,
        InvitationInline,
        GroupGrantInline,
        HubRevisionInline,
        HubEventInline,
    ]
    actions = ["approve_selected", "delete_selected_hubs"]

    def get_readonly_fields(self, request, obj=None):
        # A hub's spec changes through the portal's change form (validated, versioned, decided,
        # applied to the cluster), its people on the members page; editing the row here would
        # skip all of that. This page shows it, with a link to the portal's page of the hub.
        # Only installation choices that are an admin's alone (not part of the spec an owner
        # requests) are edited here.
        opts = Hub._meta
        return [
            "portal_page",
            "login_client",
            *(f.name for f in opts.fields if f.name not in self.ADMIN_CHOICES),
            *(f.name for f in opts.many_to_many),
        ]

    ADMIN_CHOICES = ("open_egress",)

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        changed = [name for name in self.ADMIN_CHOICES if name in form.changed_data]
        if not changed:
            return
        record("hub.admin_choice", obj, **{name: getattr(obj, name) for name in changed})
        if obj.state in SYNCED_STATES:
            queue.after_commit(queue.PROVISION, obj.pk)

    @admin.display(description="In the portal")
    def portal_page(self, hub: Hub) -> str:
        url = reverse("hubs:detail", args=[hub.pk])
        return format_html('<a href="{}">{}</a> (changes, members, approval)', url, url)

    @admin.display(description="Login client at the identity provider")
    def login_client(self, hub: Hub) -> str:
        # The client id an IdP admin looks for; its secret and management token stay unshown.
        try:
            client = hub.login_client
        except LoginClient.DoesNotExist:
            return "none registered (a shared client, or not provisioned yet)"
        return format_html(
            "{} for {} (registered {})",
            client.client_id,
            client.redirect_uri,
            date_format(client.registered, "DATETIME_FORMAT"),
        )

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Removing rows would lose the record and skip deprovisioning; use "Delete hubs".
        actions.pop("delete_selected", None)
        return actions

    def has_add_permission(self, request) -> bool:
        # Hubs are requested through the portal or the API, which validate and apply the policy.
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Approve selected hubs")
    def approve_selected(self, request, queryset) -> None:
        self._apply(request, queryset, lambda hub: decisions.approve(hub, request.user))

    @admin.action(description="Delete selected hubs (deprovision)")
    def delete_selected_hubs(self, request, queryset) -> None:
        self._apply(request, queryset, lambda hub: decisions.delete(hub, request.user))

    def _apply(self, request, queryset, action) -> None:
        for hub in queryset:
            try:
                action(hub)
            except LifecycleError as error:
                self.message_user(request, f"{hub.slug}: {error}", messages.WARNING)
            else:
                self.message_user(request, f"{hub.slug}: {hub.get_state_display()}.")


@admin.register(ClassSession)
class ClassSessionAdmin(admin.ModelAdmin):
    """Rooms held for classes: an admin caps a session's placeholders or refuses them."""

    list_display = [
        "__str__",
        "first_day",
        "start_time",
        "time_zone",
        "weekly",
        "attendees",
        "gpu_attendees",
        "max_placeholders",
        "refused",
    ]
    list_editable = ["max_placeholders", "refused"]
    list_filter = ["refused", "weekly"]
    search_fields = ["title", "hub__slug"]
    raw_id_fields = ["hub", "created_by"]
    actions = ["refuse"]

    @admin.action(description="Refuse the room of the selected sessions")
    def refuse(self, request, queryset) -> None:
        changed = queryset.update(refused=True)
        for session in queryset.select_related("hub"):
            record("class_session.refused", session.hub, actor=request.user, session=session.pk)
        self.message_user(request, f"Refused {changed} session(s).", messages.SUCCESS)
