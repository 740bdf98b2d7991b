"""Admin pages: the price lists (edited here), collection passes, gaps and GPU inventory."""

from django.contrib import admin

from portal.usage.models import CollectionGap, CollectionPass, GpuInventory, GpuPrice, PriceList


class GpuPriceInline(admin.TabularInline):
    model = GpuPrice
    extra = 1


@admin.register(PriceList)
class PriceListAdmin(admin.ModelAdmin):
    list_display = ("valid_from", "cpu_hour", "memory_gib_hour", "storage_gib_month", "note")
    inlines = [GpuPriceInline]


@admin.register(CollectionPass)
class CollectionPassAdmin(admin.ModelAdmin):
    list_display = (
        "at",
        "charged_from",
        "duration_seconds",
        "api_calls",
        "namespaces_seen",
        "pods_seen",
        "volumes_seen",
        "rows_written",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(CollectionGap)
class CollectionGapAdmin(admin.ModelAdmin):
    list_display = ("start", "end")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(GpuInventory)
class GpuInventoryAdmin(admin.ModelAdmin):
    list_display = ("product", "allocatable", "in_use", "observed")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
