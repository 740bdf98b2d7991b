"""The hub watcher on the local control plane: hubs move to running and deleted from watch
events, with no check task per hub; a missed event is caught up by a relist; only the holder
of the lease acts. (Its survival of an API-server restart is in test_faults.py.)"""

from __future__ import annotations

import re
import secrets
from unittest import mock

import pytest
from kubernetes import client

from portal.hubs import tasks
from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub
from portal.hubs.watcher import HubWatcher
from provisioning import k8s
from provisioning.render import selector
from provisioning.watch import Lease
from tests.factories import HubFactory
from tests.support import delete_namespaces, eventually, namespace_held, unschedulable, waited

pytestmark = [pytest.mark.cluster, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _watching(settings, kubeconfig_path):
    settings.HUB_STATUS_WATCH = True
    settings.KUBECONFIG = str(kubeconfig_path)


@pytest.fixture
def no_checks():
    """Check tasks the code under test queued (there must be none while watching)."""
    queued = []
    with (
        mock.patch.object(tasks.check_hub_ready, "apply_async", lambda *a, **k: queued.append(a)),
        mock.patch.object(tasks.check_hub_deleted, "apply_async", lambda *a, **k: queued.append(a)),
    ):
        yield queued


@pytest.fixture
def hub(kube_api):
    made = HubFactory(slug=f"watch-{secrets.token_hex(3)}", state=HubState.APPROVED)
    yield made
    delete_namespaces(kube_api, made)


def state(hub: Hub) -> str:
    hub.refresh_from_db()
    return hub.state


def stepped_until(watcher: HubWatcher, hub: Hub, wanted: str, timeout: float = 90) -> bool:
    def reached():
        watcher.step(timeout=0.5)
        return state(hub) == wanted

    return eventually(reached, timeout=timeout, interval=0)


def test_events_move_a_hub_to_running_and_then_to_deleted(kube_api, hub, no_checks):
    watcher = HubWatcher(kube_api, resync_seconds=3600)
    watcher.start_feeds(watch_seconds=30)
    try:
        eventually(lambda: (watcher.step(0.2), watcher.listed == {"Deployment", "Namespace"})[1])
        assert tasks.provision_hub.apply((hub.pk,)).get() == "applied"
        assert stepped_until(watcher, hub, HubState.RUNNING)

        Hub.objects.filter(pk=hub.pk).update(state=HubState.DEPROVISIONING)
        assert tasks.deprovision_hub.apply((hub.pk,)).get() == "deleting"
        assert stepped_until(watcher, hub, HubState.DELETED, timeout=120)
        assert watcher.moved == [(hub.pk, HubState.RUNNING), (hub.pk, HubState.DELETED)]
        # Watch events did it: no check task, and each feed listed once.
        assert no_checks == []
        assert [feed.lists for feed in watcher.feeds] == [1, 1]
    finally:
        watcher.stop_feeds()


def test_a_missed_event_is_caught_up_by_a_relist(kube_api, hub, no_checks):
    """The watcher was not listening while the hub became available (a dropped watch); its
    next relist, as a feed makes after any error, moves the hub."""
    watcher = HubWatcher(kube_api, resync_seconds=3600)
    watcher.relist()
    assert tasks.provision_hub.apply((hub.pk,)).get() == "applied"
    watcher.step(timeout=0)  # the first look: not available yet
    eventually(
        lambda: tasks.deployments_available(
            k8s.list_objects(kube_api, "Deployment", hub.namespace, selector(hub.pk))
        )[0],
        timeout=90,
    )
    watcher.step(timeout=0)  # nothing new has reached it
    assert state(hub) == HubState.PROVISIONING

    watcher.relist()
    watcher.step(timeout=0)
    assert state(hub) == HubState.RUNNING


def test_only_the_holder_of_the_lease_acts_and_another_takes_over(kube_api, hub, no_checks):
    name = f"watcher-{secrets.token_hex(4)}"
    first = Lease(kube_api, name, "default", "first", duration_seconds=2)
    second = Lease(kube_api, name, "default", "second", duration_seconds=2)
    assert first.hold() and first.hold()  # taken, then renewed
    assert not second.hold()

    follower = HubWatcher(kube_api, lease=second, resync_seconds=0)
    assert tasks.provision_hub.apply((hub.pk,)).get() == "applied"
    eventually(
        lambda: tasks.deployments_available(
            k8s.list_objects(kube_api, "Deployment", hub.namespace, selector(hub.pk))
        )[0],
        timeout=90,
    )
    follower.relist()
    # Renewed just before the follower looks: waiting for the Deployments on a busy machine
    # can take longer than the 2-second lease.
    assert first.hold()
    follower.step(timeout=0)
    assert not follower.leading and state(hub) == HubState.PROVISIONING

    # The first holder stops renewing; once the lease expired the second takes it and acts.
    def took_over():
        follower._last_lease = 0.0
        follower.step(timeout=0)
        return follower.leading

    eventually(took_over, timeout=10)
    assert state(hub) == HubState.RUNNING
    assert not first.hold()
    client.CoordinationV1Api(kube_api).delete_namespaced_lease(name, "default")


def test_a_hub_that_never_becomes_ready_fails_once_the_window_has_passed(
    kube_api, hub, no_checks, settings
):
    watcher = HubWatcher(kube_api, resync_seconds=0)  # every step looks at every hub
    assert tasks.provision_hub.apply((hub.pk,)).get() == "applied"
    unschedulable(kube_api, hub)
    watcher.relist()
    watcher.step(timeout=0)
    hub.refresh_from_db()
    assert hub.state == HubState.PROVISIONING
    assert hub.state_reason.startswith(tasks.WAITING_FOR_ROOM), hub.state_reason

    # 9 minutes of a 10-minute window: still waiting.
    waited(hub, 9 * 60)
    watcher.step(timeout=0)
    assert state(hub) == HubState.PROVISIONING

    settings.HUB_READY_TIMEOUT_SECONDS = 120
    watcher.step(timeout=0)
    hub.refresh_from_db()
    assert hub.state == HubState.FAILED
    assert hub.state_reason.startswith(f"Not ready after 2 minutes: {tasks.WAITING_FOR_ROOM}")
    assert watcher.moved == [(hub.pk, HubState.FAILED)] and no_checks == []


def test_namespaces_that_never_go_fail_the_hub_once_the_window_has_passed(
    kube_api, hub, no_checks, settings
):
    watcher = HubWatcher(kube_api, resync_seconds=0)
    assert tasks.provision_hub.apply((hub.pk,)).get() == "applied"
    Hub.objects.filter(pk=hub.pk).update(state=HubState.DEPROVISIONING)
    with namespace_held(kube_api, hub.namespace):
        assert tasks.deprovision_hub.apply((hub.pk,)).get() == "deleting"
        waited(hub, 9 * 60)
        watcher.relist()
        watcher.step(timeout=0)
        assert state(hub) == HubState.DEPROVISIONING

        settings.HUB_READY_TIMEOUT_SECONDS = 120
        watcher.step(timeout=0)
    hub.refresh_from_db()
    assert hub.state == HubState.FAILED
    # The first of its namespaces still there: the held one, or its users' if that is slower.
    names = f"({hub.namespace}|{hub.users_namespace})"
    assert re.fullmatch(f"{names} still Terminating after 2 minutes", hub.state_reason)
