"""The members section of a hub's page: what the viewer may see of who uses the hub."""

from typing import Any

from django import template

from portal.hubs import members
from portal.hubs.models import Hub

register = template.Library()


@register.simple_tag(takes_context=True)
def members_section(context: template.Context, hub: Hub) -> dict[str, Any]:
    """Members, tiers and (for managers) invitations and group grants of `hub` for the viewer."""
    user = context["request"].user
    can_manage = members.can_manage_members(hub, user)
    section: dict[str, Any] = {
        "can_manage": can_manage,
        "mine": members.membership(hub, user),
        "members": hub.members.select_related("user", "tier").order_by("user__username"),
        "tiers": members.hub_tiers(hub),
    }
    if can_manage:
        section["invitations"] = [
            i for i in hub.invitations.select_related("tier") if i.status() == "pending"
        ]
        section["group_grants"] = list(hub.group_grants.select_related("tier"))
    return section
