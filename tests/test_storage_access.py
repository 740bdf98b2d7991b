"""External storage that names users or IdP groups may be requested by those only: through the
API and the web form alike (both validate with the request form), and a hub that already has
it keeps it through a change."""

import pytest

from portal.hubs.models import Hub
from tests.factories import IdentityProfileFactory, StorageOptionFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def genomes():
    option = StorageOptionFactory(name="genomes", display_name="Genomes")
    option.allowed_groups = "bioinformatics, genomics-lab"
    option.save()
    return option


def request_hub(api, user, payload, **changes):
    api.force_authenticate(user)
    return api.post("/api/v1/hubs/", payload(**changes), format="json")


def test_an_outsider_cannot_request_storage_that_names_others(api, alice, payload, genomes):
    response = request_hub(api, alice, payload, storage_options=["genomes"])
    assert response.status_code == 400
    (message,) = response.json()["storage_options"]
    assert "Genomes may be requested only by the users and IdP groups it names" in message
    assert not Hub.objects.exists()  # nothing half-created


def test_a_member_of_a_named_group_or_a_named_user_may_request_it(api, payload, genomes):
    member = UserFactory(username="gwen")
    IdentityProfileFactory(user=member, idp_groups=["genomics-lab"])
    response = request_hub(api, member, payload, storage_options=["genomes"])
    assert response.status_code == 201, response.json()

    named = UserFactory(username="nina")
    genomes.allowed_users.add(named)
    response = request_hub(api, named, payload, slug="stats-102", storage_options=["genomes"])
    assert response.status_code == 201, response.json()


def test_storage_that_names_nobody_is_open_to_everyone(api, alice, payload):
    StorageOptionFactory(name="scratch")
    assert request_hub(api, alice, payload, storage_options=["scratch"]).status_code == 201


def test_a_hub_that_has_it_keeps_it_when_its_owner_leaves_the_group(api, payload, genomes):
    member = UserFactory(username="gwen")
    identity = IdentityProfileFactory(user=member, idp_groups=["bioinformatics"])
    hub_id = request_hub(api, member, payload, storage_options=["genomes"]).json()["id"]
    Hub.objects.filter(pk=hub_id).update(state="running")
    identity.idp_groups = []
    identity.save()
    response = api.post(
        f"/api/v1/hubs/{hub_id}/revisions/",
        {"expected_users": 45, "storage_options": ["genomes"]},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["spec"]["storage_options"] == ["genomes"]


def test_a_change_cannot_add_storage_that_names_others(api, alice, payload, genomes):
    hub_id = request_hub(api, alice, payload).json()["id"]
    Hub.objects.filter(pk=hub_id).update(state="running")
    response = api.post(
        f"/api/v1/hubs/{hub_id}/revisions/", {"storage_options": ["genomes"]}, format="json"
    )
    assert response.status_code == 400
    assert "may be requested only by" in response.json()["storage_options"][0]
    assert not Hub.objects.get(pk=hub_id).storage_options.exists()


def test_an_owner_cannot_open_their_hubs_egress_through_the_api(api, alice, payload):
    """Open egress is an admin's choice (the hub's admin page): a request or a change that
    asks for it leaves it closed."""
    response = request_hub(api, alice, payload, open_egress=True)
    assert response.status_code == 201, response.json()
    hub_id = response.json()["id"]
    assert Hub.objects.get(pk=hub_id).open_egress is False
    Hub.objects.filter(pk=hub_id).update(state="running")
    api.post(
        f"/api/v1/hubs/{hub_id}/revisions/",
        {"expected_users": 45, "open_egress": True},
        format="json",
    )
    assert Hub.objects.get(pk=hub_id).open_egress is False
