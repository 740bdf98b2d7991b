"""The Django admin's pages of accounts: identities waiting to be linked to an account."""

from django.contrib import admin, messages

from portal.accounts import links
from portal.accounts.models import LinkRequest


@admin.register(LinkRequest)
class LinkRequestAdmin(admin.ModelAdmin):
    """Sign-ins refused because the name belongs to an account not made by signing in."""

    list_display = ("claimed_username", "user", "provider", "email", "requested_at")
    readonly_fields = ("user", "provider", "uid", "claimed_username", "email", "requested_at")
    actions = ["link_identity"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Link the identity to the account (it then signs in to it)")
    def link_identity(self, request, queryset) -> None:
        for link_request in queryset:
            try:
                links.link(link_request, request.user)
            except links.LinkError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(
                    request, f"{link_request.claimed_username} now signs in to {link_request.user}."
                )
