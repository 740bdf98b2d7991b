"""The hub list and a hub's detail cost the same number of queries for 2 hubs as for 20.

Each caller sees its hubs through the real token header (the token's lookup counted), and the
hubs carry everything the representation shows: catalogue entries, members, events, group
grants, and pending requests whose policy violations are worked out over their owner's other
live hubs.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from portal.hubs import lifecycle
from portal.hubs.lifecycle import HubState
from portal.hubs.models import GroupGrant, Member, MemberTier
from tests.factories import (
    HardwareOptionFactory,
    HubFactory,
    IdentityProfileFactory,
    ImageFactory,
    StorageOptionFactory,
    UserFactory,
    api_token,
)

pytestmark = pytest.mark.django_db

# The token's lookup, the hubs, their catalogue entries (3 relations), events and members.
REPRESENTATION = 7
# For the pending hubs among them: the policy, and these hubs with their owners' other hubs
# as specs (the hubs and 9 relations, tiers' own and class sessions included).
POLICY = 11


def seed(count: int, owner, member, group: str) -> list:
    """`count` hubs of `owner`, every other one pending (and beyond the self-service policy),
    each with two of every catalogue relation, a tier, a co-owner, `member` in the tier, a group
    grant and events."""
    small, large = HardwareOptionFactory(name="small"), HardwareOptionFactory(name="large")
    images = [ImageFactory(name="scipy"), ImageFactory(name="r")]
    storage = [StorageOptionFactory(name="projects"), StorageOptionFactory(name="scratch")]
    hubs = []
    for i in range(count):
        state = HubState.PENDING if i % 2 else HubState.RUNNING
        hub = HubFactory(
            owner=owner,
            slug=f"q-{i}",
            state=state,
            hardware_options=[small, large],
            images=images,
            expected_users=500 if state == HubState.PENDING else 10,
        )
        hub.storage_options.set(storage)
        Member.objects.create(hub=hub, user=UserFactory(), role=Member.Role.CO_OWNER)
        tier = MemberTier.objects.create(hub=hub, name="students", is_default=True)
        tier.hardware_options.set([small])
        tier.images.set(images[:1])
        Member.objects.create(hub=hub, user=member, tier=tier)
        GroupGrant.objects.create(hub=hub, group=group)
        lifecycle.record_event(hub.pk, "", HubState.PENDING, owner, "Requested")
        if state != HubState.PENDING:
            lifecycle.record_event(hub.pk, HubState.PENDING, state, None, "Running")
        hubs.append(hub)
    return hubs


def queries(client: APIClient, url: str) -> tuple[int, dict]:
    """The number of queries a GET of `url` makes, and its JSON."""
    client.get(url)  # the token's first use of the minute records it; later uses write nothing
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(captured), response.json()


@pytest.mark.parametrize("caller", ["owner", "member", "group member", "admin"])
@pytest.mark.parametrize("count", [2, 20])
def test_list_and_detail_queries_do_not_grow_with_hubs(caller, count):
    owner, member = UserFactory(username="alice"), UserFactory(username="erin")
    grouped = UserFactory(username="gina")
    IdentityProfileFactory(user=grouped, idp_groups=["physics"])
    UserFactory(username="bob")  # sees none of them
    HubFactory(owner=UserFactory(username="olga"), slug="others", state=HubState.PENDING)
    hubs = seed(count, owner, member, group="physics")
    user = {"owner": owner, "member": member, "group member": grouped}.get(caller)
    user = user or UserFactory(username="charlie", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")

    listed, body = queries(client, "/api/v1/hubs/?page_size=20")
    assert body["count"] == count + (caller == "admin")
    assert {hub["slug"] for hub in body["results"]} >= {hub.slug for hub in hubs}
    pending = next(hub for hub in body["results"] if hub["slug"] == "q-1")
    assert pending["policy_violations"][0].startswith("500 expected users exceeds")
    assert listed == 1 + REPRESENTATION + POLICY  # 1: the count of all pages

    for hub in hubs[:2]:  # one running, one pending
        detailed, body = queries(client, f"/api/v1/hubs/{hub.pk}/")
        assert body["slug"] == hub.slug
        pending = hub.state == HubState.PENDING
        assert detailed == REPRESENTATION + (POLICY if pending else 0)
