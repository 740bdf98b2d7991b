"""A change of a running hub's members reaches its namespace as the members ConfigMap only:
the hub Deployment (and so the hub and every user server) is left alone."""

from __future__ import annotations

import json
import secrets
from unittest import mock

import pytest
from django.conf import settings

from portal.hubs import members, tasks
from portal.hubs.cluster import render_settings
from portal.hubs.hubspec import from_hub, hub_queryset
from portal.hubs.lifecycle import HubState
from portal.hubs.tasks import apply_members
from provisioning import k8s
from provisioning.render import selector
from provisioning.sync import sync_hub
from tests.factories import HubFactory, UserFactory
from tests.support import delete_namespaces, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _tasks_use_the_test_cluster(settings, kubeconfig_path):
    """Tasks build their API client from settings.KUBECONFIG: point it at the test cluster
    (it may have been started after settings were read)."""
    settings.KUBECONFIG = str(kubeconfig_path)


@pytest.fixture(autouse=True)
def access_checks():
    """The runs of end_removed_access that apply_members queues, as (args, countdown)."""
    calls = []
    with mock.patch.object(
        tasks.end_removed_access,
        "apply_async",
        lambda args, countdown=None, **kw: calls.append((args, countdown)),
    ):
        yield calls


@pytest.fixture
def running_hub(kube_api, alice):
    """A running hub of alice's, applied to the cluster as provisioning applies it."""
    hub = HubFactory(owner=alice, slug=f"mem-{secrets.token_hex(3)}", state=HubState.RUNNING)
    members.default_tier(hub)
    sync_hub(
        kube_api, from_hub(hub_queryset().get(pk=hub.pk), settings.HUBS_DOMAIN), render_settings()
    )
    yield hub
    delete_namespaces(kube_api, hub)


def members_file(kube_api, hub) -> dict:
    config_map = k8s.get(kube_api, "ConfigMap", "hub-members", hub.namespace)
    return json.loads(config_map["data"]["members.json"])


def hub_deployment(kube_api, hub) -> dict:
    return k8s.get(kube_api, "Deployment", "hub", hub.namespace)


def test_a_new_member_and_tier_reach_the_cluster_without_touching_the_hub(
    kube_api, running_hub, alice, django_capture_on_commit_callbacks, access_checks
):
    before = hub_deployment(kube_api, running_hub)
    UserFactory(username="erin")
    tier = members.create_tier(
        running_hub, alice, {"name": "students", "hardware_options": ["small"]}
    )
    members.add_member(
        running_hub, alice, {"username": "erin", "role": "member", "tier": "students"}
    )

    assert apply_members.apply(args=(running_hub.pk,)).get() == "applied"

    # Removed members' sessions are ended now and after the kubelet's refresh of the file.
    assert access_checks == [
        ((running_hub.pk,), None),
        ((running_hub.pk,), tasks.MEMBERS_FILE_REFRESH_SECONDS),
    ]
    values = members_file(kube_api, running_hub)
    assert values["user_tiers"] == {"erin": "students"}
    assert values["tiers"][tier.name]["profiles"] == ["small"]
    after = hub_deployment(kube_api, running_hub)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert (
        after["spec"]["template"]["metadata"]["annotations"]
        == before["spec"]["template"]["metadata"]["annotations"]
    )

    # A full re-apply (the reconcile pass, a later change) agrees: nothing else to write.
    sync_hub(
        kube_api,
        from_hub(hub_queryset().get(pk=running_hub.pk), settings.HUBS_DOMAIN),
        render_settings(),
    )
    assert (
        hub_deployment(kube_api, running_hub)["metadata"]["generation"]
        == (before["metadata"]["generation"])
    )
    assert k8s.list_objects(kube_api, "ConfigMap", running_hub.namespace, selector(running_hub.pk))


def test_members_of_a_hub_that_does_not_run_are_not_applied(kube_api, alice):
    hub = HubFactory(owner=alice, state=HubState.PENDING)
    assert apply_members.apply(args=(hub.pk,)).get() == "skipped"
    assert apply_members.apply(args=(10**9,)).get() == "skipped"


def test_a_hub_whose_api_cannot_be_reached_keeps_its_state(running_hub, settings):
    """Ending access early is best effort: the hub's own membership refresh still ends it."""
    settings.HUB_API_URL = f"http://127.0.0.1:{free_port()}/hub/api"

    assert tasks.end_removed_access.apply((running_hub.pk,)).get() == "unreached"

    running_hub.refresh_from_db()
    assert running_hub.state == HubState.RUNNING


def test_no_access_is_ended_in_a_hub_that_does_not_run(kube_api, alice):
    hub = HubFactory(owner=alice, state=HubState.SUSPENDED)
    assert tasks.end_removed_access.apply((hub.pk,)).get() == "skipped"
