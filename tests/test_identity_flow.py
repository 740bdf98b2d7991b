"""The whole identity story of a hub, as its owner and a colleague live it: sign in through the
institution's IdP (the real OIDC provider of tests/oidc_provider/), request a hub, define a tier,
invite a colleague by e-mail and a group by name; the colleague signs in, accepts, and the hub's
rendered members list lets them in with the right tier."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from portal.hubs.hubspec import from_hub
from portal.hubs.models import Hub
from provisioning import hubconfig
from tests.test_sso import sign_in

pytestmark = pytest.mark.django_db


def test_owner_invites_by_email_and_group_and_the_colleague_lands_in_the_hub(sso, spec, settings):
    owner = Client()
    assert sign_in(owner, sso, "Ada.Lovelace").status_code == 302

    created = owner.post(
        reverse("hubs:create"),
        spec(shared_volume_gib="10", shared_volume_mode="ro"),
    )
    assert created.status_code == 302, created.content.decode()[:2000]
    hub = Hub.objects.get(slug="stats-101")
    assert hub.owner.username == "ada.lovelace"

    tier = owner.post(
        reverse("hubs:tier_create", args=[hub.pk]),
        {
            "name": "students",
            "hardware_options": ["small"],
            "images": ["scipy"],
            "shared_access": "ro",
        },
    )
    assert tier.status_code == 302, tier.content.decode()[:2000]

    invited = owner.post(
        reverse("hubs:invitation_create", args=[hub.pk]),
        {"email": "grace@uni.example", "role": "member", "tier": "students"},
    )
    assert invited.status_code == 200, invited.content.decode()[:2000]
    granted = owner.post(
        reverse("hubs:group_grant_add", args=[hub.pk]),
        {"group": "course-101", "role": "member", "tier": "students"},
    )
    assert granted.status_code == 302, granted.content.decode()[:2000]

    (message,) = [m for m in mail.outbox if "grace@uni.example" in m.to]
    link = re.search(r"https?://\S+/hubs/\d+/join/#\S+", message.body).group(0)
    path, _, token = link.split("://", 1)[1].partition("/")[2].partition("#")
    path, accept = "/" + path, reverse("hubs:invitation_accept", args=[hub.pk])

    colleague = Client()
    # Following the link before signing in asks for sign-in and changes nothing.
    assert colleague.get(path).status_code == 200
    assert colleague.post(path, {"token": token}).status_code == 302
    assert not hub.members.filter(user__username="grace").exists()
    assert sign_in(colleague, sso, "grace").status_code == 302
    accepted = colleague.post(accept)  # the invitation opened before signing in
    assert accepted.status_code == 302, accepted.content.decode()[:2000]

    members = hubconfig.members_values(from_hub(hub, settings.HUBS_DOMAIN))
    assert "grace" in members["allowed_users"]
    assert members["user_tiers"]["grace"] == "students"
    assert members["allowed_groups"] == ["course-101"]
    assert members["group_tiers"] == {"course-101": "students"}
    students = members["tiers"]["students"]
    assert students["profiles"] == ["small"]
    assert students["images"] == ["scipy"]
    assert students["shared"] == "ro"
    # The link worked once: a second use is refused with a clear page.
    again = colleague.post(accept, {"token": token})
    assert again.status_code == 400 and b"already accepted" in again.content
