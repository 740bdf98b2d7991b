"""Django admin: catalogues and policy are edited here; hub states change only through services."""

from django.contrib import admin, messages

from portal.hubs import services
from portal.hubs.lifecycle import LifecycleError
from portal.hubs.models import (
    Collaborator,
    GpuType,
    HardwareOption,
    Hub,
    HubEvent,
    HubRevision,
    Image,
    SelfServicePolicy,
    StorageOption,
)


@admin.register(HardwareOption)
class HardwareOptionAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "display_name",
        "cpu_guarantee",
        "cpu_limit",
        "mem_guarantee_gib",
        "mem_limit_gib",
        "enabled",
    ]
    list_editable = ["enabled"]


@admin.register(GpuType)
class GpuTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "resource_name", "node_label_value", "enabled"]
    list_editable = ["enabled"]


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "reference", "interface", "enabled"]
    list_filter = ["interface", "enabled"]
    list_editable = ["enabled"]


@admin.register(StorageOption)
class StorageOptionAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "kind", "server", "path", "storage_class", "enabled"]
    list_editable = ["enabled"]


@admin.register(SelfServicePolicy)
class SelfServicePolicyAdmin(admin.ModelAdmin):
    list_display = ["__str__", "max_expected_users", "max_cpu_limit", "max_gpus_per_user"]

    def has_add_permission(self, request) -> bool:
        # Only the first row is used; edit it rather than adding another.
        return not SelfServicePolicy.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class CollaboratorInline(admin.TabularInline):
    model = Collaborator
    extra = 0
    autocomplete_fields = ["user"]


class HubEventInline(admin.TabularInline):
    model = HubEvent
    extra = 0
    can_delete = False
    fields = ["created", "from_state", "to_state", "actor", "reason"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class HubRevisionInline(admin.TabularInline):
    model = HubRevision
    extra = 0
    can_delete = False
    fields = ["number", "state", "changed_fields", "author", "approver", "created", "applied"]
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


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
                services.approve_change(revision, request.user)
            except LifecycleError as error:
                self.message_user(request, f"{revision}: {error}", messages.WARNING)
            else:
                self.message_user(request, f"{revision.hub.slug} #{revision.number}: applied.")


@admin.register(Hub)
class HubAdmin(admin.ModelAdmin):
    list_display = ["slug", "display_name", "owner", "state", "start_date", "end_date", "created"]
    list_filter = ["state", "kind"]
    search_fields = ["slug", "display_name", "owner__username"]
    readonly_fields = ["state", "state_reason", "state_changed", "created", "updated"]
    autocomplete_fields = ["owner"]
    filter_horizontal = ["hardware_options", "images", "storage_options"]
    inlines = [CollaboratorInline, HubRevisionInline, HubEventInline]
    actions = ["approve_selected", "delete_selected_hubs"]

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
        self._apply(request, queryset, lambda hub: services.approve(hub, request.user))

    @admin.action(description="Delete selected hubs (deprovision)")
    def delete_selected_hubs(self, request, queryset) -> None:
        self._apply(request, queryset, lambda hub: services.delete(hub, request.user))

    def _apply(self, request, queryset, action) -> None:
        for hub in queryset:
            try:
                action(hub)
            except LifecycleError as error:
                self.message_user(request, f"{hub.slug}: {error}", messages.WARNING)
            else:
                self.message_user(request, f"{hub.slug}: {hub.get_state_display()}.")
