"""The mail log in the Django admin: what was sent to whom, what failed and when it is retried."""

from django.contrib import admin, messages

from portal.notifications import mail
from portal.notifications.models import Notice


@admin.register(Notice)
class NoticeAdmin(admin.ModelAdmin):
    list_display = ["hub", "kind", "status", "attempts", "next_attempt", "created", "sent"]
    list_filter = ["status", "kind"]
    search_fields = ["hub__slug", "recipients", "key"]
    readonly_fields = [field.name for field in Notice._meta.fields]
    actions = ["send_again"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # a record of what happened; readable, not editable

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # deleting one would let the same notice be sent twice

    @admin.action(description="Send the selected failed notices again now")
    def send_again(self, request, queryset) -> None:
        failed = queryset.filter(status=Notice.Status.FAILED).exclude(subject="")
        for notice in failed.select_related("hub"):
            notice = mail.deliver(notice)
            level = messages.SUCCESS if notice.status == Notice.Status.SENT else messages.WARNING
            self.message_user(request, f"{notice}: {notice.detail or 'sent'}", level)
