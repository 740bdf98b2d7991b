"""The provisioning tasks, run in this process against the local control plane.

Only the hand-over of follow-up checks to the broker is recorded instead of sent; every
Kubernetes call is real.
"""

from __future__ import annotations

import base64
import json
import secrets
from unittest import mock

import pytest
from kubernetes import client

from portal.audit.models import AuditEvent
from portal.hubs import tasks
from portal.hubs.hubspec import from_hub
from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub, LoginClient, SelfServicePolicy
from provisioning import hubconfig, k8s
from provisioning.render import CONFIG_MAP_NAME, SECRET_NAME
from provisioning.spec import HubSpec
from tests.factories import HubFactory
from tests.support import (
    delete_namespaces,
    eventually,
    free_port,
    namespace_held,
    unschedulable,
)

pytestmark = [pytest.mark.cluster, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def cluster_settings(settings, kubeconfig_path):
    settings.KUBECONFIG = str(kubeconfig_path)


@pytest.fixture
def scheduled(settings):
    """Follow-up tasks the code under test queued, as (task name, args), with the readiness
    and deletion checks polling (HUB_STATUS_WATCH off; test_watcher.py covers the watcher)."""
    settings.HUB_STATUS_WATCH = False
    calls: list[tuple[str, tuple]] = []
    with (
        mock.patch.object(
            tasks.check_hub_ready, "apply_async", lambda args, **kw: calls.append(("ready", args))
        ),
        mock.patch.object(
            tasks.check_hub_deleted,
            "apply_async",
            lambda args, **kw: calls.append(("deleted", args)),
        ),
    ):
        yield calls


@pytest.fixture
def approved_hub(kube_api):
    hub = HubFactory(slug=f"task-{secrets.token_hex(3)}", state=HubState.APPROVED, expected_users=2)
    yield hub
    delete_namespaces(kube_api, hub)


def state(hub: Hub) -> str:
    hub.refresh_from_db()
    return hub.state


def test_provision_applies_objects_and_the_check_marks_the_hub_running(
    approved_hub, kube_api, scheduled
):
    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "applied"
    assert state(approved_hub) == HubState.PROVISIONING
    assert scheduled == [("ready", (approved_hub.pk,))]
    assert client.CoreV1Api(kube_api).read_namespace(approved_hub.namespace)

    # Delivered twice (acks_late after a worker crash): same objects, same state.
    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "applied"
    assert state(approved_hub) == HubState.PROVISIONING

    eventually(lambda: tasks.check_hub_ready.apply((approved_hub.pk,)).get(), equals="running")
    assert state(approved_hub) == HubState.RUNNING
    assert [e.to_state for e in approved_hub.events.order_by("created", "pk")][-2:] == [
        HubState.PROVISIONING,
        HubState.RUNNING,
    ]


def test_an_object_the_cluster_refuses_fails_the_hub_with_the_api_servers_message(
    approved_hub, settings, scheduled
):
    settings.INGRESS_ANNOTATIONS = {"not a valid key!": "x"}
    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "failed"
    approved_hub.refresh_from_db()
    assert approved_hub.state == HubState.FAILED
    assert approved_hub.state_reason.startswith("The cluster refused Ingress jupyterhub: ")
    assert "Invalid value" in approved_hub.state_reason
    assert scheduled == []


def test_an_unreachable_cluster_is_retried_then_fails_the_hub(
    approved_hub, settings, tmp_path, scheduled
):
    kubeconfig = tmp_path / "unreachable"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    settings.KUBECONFIG = str(kubeconfig)
    attempts = []
    original = tasks.k8s.get

    def counting_get(api, kind, name, namespace=None):
        attempts.append(kind)  # each attempt starts by reading the hub's namespace
        return original(api, kind, name, namespace)

    with mock.patch.object(tasks.k8s, "get", counting_get):
        tasks.provision_hub.apply((approved_hub.pk,))
    # Eager retries run at once; a worker waits 2, 4, 8, ... seconds between them.
    assert len(attempts) == tasks.MAX_RETRIES + 1
    approved_hub.refresh_from_db()
    assert approved_hub.state == HubState.FAILED
    assert "cannot reach the Kubernetes API server" in approved_hub.state_reason


def test_a_worker_without_a_kubernetes_configuration_fails_the_hub_saying_so(
    approved_hub, settings, tmp_path, scheduled
):
    settings.KUBECONFIG = str(tmp_path / "missing-kubeconfig")

    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "failed"

    approved_hub.refresh_from_db()
    assert approved_hub.state == HubState.FAILED
    assert approved_hub.state_reason.startswith(
        f"The portal has no usable Kubernetes configuration (the kubeconfig {tmp_path}"
    )
    assert "Set KUBECONFIG" in approved_hub.state_reason


def test_deprovision_deletes_the_namespace_and_the_check_marks_the_hub_deleted(
    approved_hub, kube_api, scheduled
):
    Hub.objects.filter(pk=approved_hub.pk).update(jobs_access=True)
    tasks.provision_hub.apply((approved_hub.pk,))
    approved_hub.refresh_from_db()
    (jobs_namespace,) = from_hub(approved_hub).jobs_namespaces
    assert k8s_get("Namespace", jobs_namespace, None, kube_api)
    Hub.objects.filter(pk=approved_hub.pk).update(state=HubState.DEPROVISIONING)

    assert tasks.deprovision_hub.apply((approved_hub.pk,)).get() == "deleting"
    assert ("deleted", (approved_hub.pk,)) in scheduled
    eventually(
        lambda: tasks.check_hub_deleted.apply((approved_hub.pk,)).get() == "deleted", timeout=90
    )
    assert state(approved_hub) == HubState.DELETED
    # Every namespace of the hub is gone: its own, its users' and the owner's jobs namespace.
    for name in (approved_hub.namespace, approved_hub.users_namespace, jobs_namespace):
        assert k8s_get("Namespace", name, None, kube_api) is None


@pytest.mark.parametrize(
    "labels",
    [{}, {"app.kubernetes.io/managed-by": "hub-on-demand", "hub-on-demand.io/hub-id": "999999"}],
    ids=["made-by-hand", "another-portals-hub"],
)
def test_a_namespace_that_is_not_the_hubs_is_never_applied_into_or_deleted(
    approved_hub, kube_api, scheduled, labels
):
    """Someone's namespace of the hub's name (made by hand, or another portal's hub on the same
    cluster) fails the hub with a clear reason; nothing in it is touched, and deleting the hub
    leaves it where it is."""
    core = client.CoreV1Api(kube_api)
    core.create_namespace({"metadata": {"name": approved_hub.namespace, "labels": labels}})
    core.create_namespaced_config_map(
        approved_hub.namespace, {"metadata": {"name": "theirs"}, "data": {"keep": "me"}}
    )

    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "failed"

    approved_hub.refresh_from_db()
    assert approved_hub.state == HubState.FAILED
    assert approved_hub.state_reason.startswith(
        f"The namespace {approved_hub.namespace} already exists and is not this hub's"
    )
    namespace = core.read_namespace(approved_hub.namespace)
    assert (namespace.metadata.labels or {}).get("hub-on-demand.io/hub-id") == labels.get(
        "hub-on-demand.io/hub-id"
    )
    names = [m.metadata.name for m in core.list_namespaced_config_map(approved_hub.namespace).items]
    assert "theirs" in names and CONFIG_MAP_NAME not in names  # nothing of the hub's applied
    assert scheduled == []

    Hub.objects.filter(pk=approved_hub.pk).update(state=HubState.DEPROVISIONING)
    assert tasks.deprovision_hub.apply((approved_hub.pk,)).get() == "deleted"
    assert state(approved_hub) == HubState.DELETED
    assert core.read_namespace(approved_hub.namespace).status.phase == "Active"


@pytest.mark.parametrize("task", [tasks.provision_hub, tasks.deprovision_hub])
def test_a_task_for_a_missing_or_moved_on_hub_does_nothing(task, scheduled):
    assert task.apply((987654321,)).get() in ("missing", "skipped")
    rejected = HubFactory(state=HubState.REJECTED)
    assert task.apply((rejected.pk,)).get() == "skipped"
    assert state(rejected) == HubState.REJECTED
    assert scheduled == []


def test_a_suspended_hub_runs_nothing_but_keeps_its_volumes(approved_hub, kube_api, scheduled):
    tasks.provision_hub.apply((approved_hub.pk,))
    core = client.CoreV1Api(kube_api)
    # A user server KubeSpawner started (in the users' namespace, as Pod Security
    # "restricted" wants it).
    core.create_namespaced_pod(
        approved_hub.users_namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(
                name="jupyter-ada",
                labels={"app.kubernetes.io/component": "singleuser-server"},
            ),
            spec=client.V1PodSpec(
                security_context=client.V1PodSecurityContext(
                    run_as_non_root=True,
                    run_as_user=1000,
                    seccomp_profile={"type": "RuntimeDefault"},
                ),
                containers=[
                    client.V1Container(
                        name="notebook",
                        image="quay.io/jupyter/base",
                        security_context=client.V1SecurityContext(
                            allow_privilege_escalation=False, capabilities={"drop": ["ALL"]}
                        ),
                    )
                ],
            ),
        ),
    )
    Hub.objects.filter(pk=approved_hub.pk).update(state=HubState.SUSPENDED)

    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "suspended"

    apps = client.AppsV1Api(kube_api)
    for name in ("hub", "proxy"):
        assert apps.read_namespaced_deployment(name, approved_hub.namespace).spec.replicas == 0
    eventually(
        lambda: not core.list_namespaced_pod(
            approved_hub.users_namespace,
            label_selector="app.kubernetes.io/component=singleuser-server",
        ).items
    )
    assert core.read_namespaced_persistent_volume_claim("hub-db", approved_hub.namespace)
    assert state(approved_hub) == HubState.SUSPENDED
    assert ("ready", (approved_hub.pk,)) not in scheduled[1:]


def test_a_change_is_applied_in_place_and_a_rollback_restores_the_previous_objects(
    approved_hub, kube_api, scheduled, django_capture_on_commit_callbacks
):
    """Through the portal's own services: revision 2 turns on jobs access (a jobs
    ServiceAccount appears), rolling back to revision 1 removes it again."""
    from portal.hubs import queue, revisions
    from portal.hubs.services import changes
    from tests.support import broker_hand_over

    owner = approved_hub.owner

    def run_queued_provisioning(callbacks_block):
        sent = []
        with (
            broker_hand_over(lambda name, args, routed_to: sent.append((name, args))),
            django_capture_on_commit_callbacks(execute=True),
        ):
            result = callbacks_block()
        assert [name for name, _ in sent] == [queue.PROVISION]
        for _, args in sent:
            assert tasks.provision_hub.apply(args).get() == "applied"
        eventually(lambda: tasks.check_hub_ready.apply((approved_hub.pk,)).get(), equals="running")
        return result

    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "applied"
    eventually(lambda: tasks.check_hub_ready.apply((approved_hub.pk,)).get(), equals="running")
    approved_hub.refresh_from_db()
    account = HubSpec.jobs_account(approved_hub.owner.username)
    assert k8s_get("ServiceAccount", account, approved_hub.users_namespace, kube_api) is None

    SelfServicePolicy.objects.update(jobs_access_needs_approval=False)
    data = revisions.form_data(revisions.spec_of_hub(approved_hub))
    data["jobs_access"] = "on"
    change = run_queued_provisioning(lambda: changes.request_change(approved_hub, owner, data))
    assert change.state == "applied"
    assert k8s_get("ServiceAccount", account, approved_hub.users_namespace, kube_api)
    approved_hub.refresh_from_db()
    (jobs_namespace,) = from_hub(approved_hub).jobs_namespaces  # the owner's
    assert k8s_get("Namespace", jobs_namespace, None, kube_api)

    approved_hub.refresh_from_db()
    rollback = run_queued_provisioning(lambda: changes.rollback(approved_hub, owner, 1))
    assert rollback.state == "applied"
    assert k8s_get("ServiceAccount", account, approved_hub.users_namespace, kube_api) is None
    # The owner's jobs namespace goes with the jobs access.
    gone = k8s_get("Namespace", jobs_namespace, None, kube_api)
    assert gone is None or gone["metadata"].get("deletionTimestamp")
    assert state(approved_hub) == HubState.RUNNING


def k8s_get(kind, name, namespace, kube_api):
    return k8s.get(kube_api, kind, name, namespace)


def test_provisioning_registers_the_hubs_login_client_and_deleting_deletes_it(
    registering, approved_hub, kube_api, scheduled, settings
):
    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "applied"

    login = LoginClient.objects.get(hub=approved_hub)
    callback = f"https://{approved_hub.slug}.{settings.HUBS_DOMAIN}/hub/oauth_callback"
    assert registering.client(login.client_id)["redirect_uris"] == [callback]
    core = client.CoreV1Api(kube_api)
    config = core.read_namespaced_config_map(CONFIG_MAP_NAME, approved_hub.namespace)
    values = json.loads(config.data[hubconfig.VALUES_FILE_KEY])
    assert values["oauth"]["client_id"] == login.client_id
    secret = core.read_namespaced_secret(SECRET_NAME, approved_hub.namespace)
    assert base64.b64decode(secret.data["oauth-client-secret"]).decode() == login.client_secret

    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "applied"
    assert list(LoginClient.objects.filter(hub=approved_hub)) == [login]

    Hub.objects.filter(pk=approved_hub.pk).update(state=HubState.DEPROVISIONING)
    assert tasks.deprovision_hub.apply((approved_hub.pk,)).get() == "deleting"
    assert registering.client(login.client_id) is None
    assert not LoginClient.objects.filter(hub=approved_hub).exists()


def test_a_hub_is_deleted_though_the_identity_provider_does_not_answer(
    registering, approved_hub, kube_api, scheduled
):
    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "applied"
    login = LoginClient.objects.get(hub=approved_hub)
    LoginClient.objects.filter(pk=login.pk).update(
        registration_client_uri=f"http://127.0.0.1:{free_port()}/o/register/{login.client_id}/"
    )
    Hub.objects.filter(pk=approved_hub.pk).update(state=HubState.DEPROVISIONING)

    # Eager retries run at once; the last one leaves the client and deletes the namespace.
    assert tasks.deprovision_hub.apply((approved_hub.pk,)).get() == "deleting"

    assert ("deleted", (approved_hub.pk,)) in scheduled
    assert not LoginClient.objects.filter(hub=approved_hub).exists()
    left = AuditEvent.objects.get(action="hub.login_client_left")
    assert left.details["client_id"] == login.client_id
    assert "did not answer" in left.details["why"]


def test_a_login_client_the_provider_refuses_fails_the_hub_before_anything_is_applied(
    registering, approved_hub, kube_api, scheduled, settings
):
    settings.OIDC_HUB_REGISTRATION_TOKEN = "not-the-initial-access-token"

    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "failed"

    approved_hub.refresh_from_db()
    assert approved_hub.state == HubState.FAILED
    assert approved_hub.state_reason.startswith(
        "The identity provider refused to register the hub's login client (HTTP 401"
    )
    assert k8s.get(kube_api, "Namespace", approved_hub.namespace) is None
    assert scheduled == []


def test_a_hub_waiting_for_room_says_so_and_fails_with_the_schedulers_reason(
    approved_hub, kube_api, scheduled, settings
):
    """The scheduler finds no node for the hub's pod (here: a node selector no node has, as
    when a cluster is full): the hub stays provisioning and says why, in its state reason (on
    its page and in the API); once the readiness window has passed it fails with that reason."""
    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "applied"
    unschedulable(kube_api, approved_hub)

    def reason():
        assert tasks.check_hub_ready.apply((approved_hub.pk,)).get() == "waiting"
        approved_hub.refresh_from_db()
        return approved_hub.state_reason.startswith(tasks.WAITING_FOR_ROOM) and approved_hub

    waiting = eventually(reason, timeout=60)
    assert waiting.state == HubState.PROVISIONING
    assert "hub: 0/" in waiting.state_reason and "node affinity/selector" in waiting.state_reason
    # No event per check: the reason is noted, not a transition.
    events = list(waiting.events.values_list("to_state", flat=True))
    assert events.count(HubState.PROVISIONING) == 1
    # Within the default window (10 minutes, 200 checks) the 199th check still waits.
    assert tasks.check_hub_ready.apply((approved_hub.pk, 198)).get() == "waiting"
    assert state(approved_hub) == HubState.PROVISIONING

    settings.HUB_READY_TIMEOUT_SECONDS = 6  # two checks 3 s apart: the second is the last
    assert tasks.check_hub_ready.apply((approved_hub.pk, 0)).get() == "waiting"
    assert tasks.check_hub_ready.apply((approved_hub.pk, 1)).get() == "failed"
    approved_hub.refresh_from_db()
    assert approved_hub.state == HubState.FAILED
    assert approved_hub.state_reason.startswith(f"Not ready after 6 s: {tasks.WAITING_FOR_ROOM}"), (
        approved_hub.state_reason
    )


def test_a_namespace_that_never_goes_fails_the_hub_once_the_window_has_passed(
    approved_hub, kube_api, scheduled, settings
):
    assert tasks.provision_hub.apply((approved_hub.pk,)).get() == "applied"
    Hub.objects.filter(pk=approved_hub.pk).update(state=HubState.DEPROVISIONING)
    with namespace_held(kube_api, approved_hub.namespace):
        assert tasks.deprovision_hub.apply((approved_hub.pk,)).get() == "deleting"
        # The default window: the 199th check of 200 still waits.
        assert tasks.check_hub_deleted.apply((approved_hub.pk, 198)).get() == "waiting"
        settings.HUB_READY_TIMEOUT_SECONDS = 3  # one check: the first is the last
        assert tasks.check_hub_deleted.apply((approved_hub.pk, 0)).get() == "failed"
    approved_hub.refresh_from_db()
    assert approved_hub.state == HubState.FAILED
    assert approved_hub.state_reason == f"{approved_hub.namespace} still Terminating after 3 s"
