"""Reconciliation against the real control plane: a fixed number of list calls per pass,
repairs of what drifted or vanished, and nothing written when nothing drifted."""

from __future__ import annotations

import base64
import dataclasses
import json
import secrets

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from portal.accounts import hub_clients
from portal.hubs import cluster, tasks
from portal.hubs.hubspec import from_hub
from portal.hubs.lifecycle import HubState
from portal.hubs.models import HubEvent, LoginClient
from provisioning import k8s
from provisioning.hubconfig import VALUES_FILE_KEY
from provisioning.reconcile import READS_PER_PASS, reconcile
from provisioning.render import CONFIG_MAP_NAME, SECRET_NAME, RenderSettings
from provisioning.sync import sync_hub
from tests.factories import HubFactory
from tests.provisioning.examples import EXAMPLES
from tests.support import delete_namespaces, http_server

pytestmark = pytest.mark.cluster

SETTINGS = RenderSettings()


@pytest.fixture
def synced_hubs(kube_api):
    made = []
    for example in ("cpu-course", "gpu-research"):
        spec = dataclasses.replace(
            EXAMPLES[example],
            slug=f"rec-{secrets.token_hex(3)}",
            hub_id=secrets.randbelow(10**9),
        )
        sync_hub(kube_api, spec, SETTINGS)
        made.append(spec)
    yield made
    for spec in made:
        delete_namespaces(kube_api, spec)


def test_a_pass_without_drift_reads_once_per_kind_and_writes_nothing(kube_api, synced_hubs):
    report = reconcile(kube_api, synced_hubs, SETTINGS)
    assert report.hubs == 2
    assert report.repaired == {}
    assert report.api_calls == READS_PER_PASS


def test_a_deleted_deployment_and_an_edited_quota_are_restored(kube_api, synced_hubs):
    spec = synced_hubs[1]
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.delete_namespaced_deployment("hub", spec.namespace)
    core.patch_namespaced_resource_quota(
        "hub-quota", spec.users_namespace, {"spec": {"hard": {"requests.nvidia.com/gpu": "99"}}}
    )

    report = reconcile(kube_api, synced_hubs, SETTINGS)

    assert set(report.repaired) == {spec.hub_id}
    assert sorted(report.repaired[spec.hub_id].repaired) == [
        "Deployment hub (missing)",
        "ResourceQuota hub-quota (changed)",
    ]
    assert report.api_calls == READS_PER_PASS + 2
    assert apps.read_namespaced_deployment("hub", spec.namespace).spec.replicas == 1
    quota = core.read_namespaced_resource_quota("hub-quota", spec.users_namespace)
    assert quota.spec.hard["requests.nvidia.com/gpu"] == "18"
    # The next pass finds nothing left to do.
    assert reconcile(kube_api, synced_hubs, SETTINGS).repaired == {}


def test_a_hub_whose_namespace_vanished_is_reported_not_recreated(kube_api, synced_hubs):
    gone = synced_hubs[0]
    missing = dataclasses.replace(gone, slug=f"never-{secrets.token_hex(3)}")
    report = reconcile(kube_api, [missing, synced_hubs[1]], SETTINGS)
    assert report.repaired[missing.hub_id].namespace_missing
    assert k8s.get(kube_api, "Namespace", missing.namespace) is None


def test_a_namespace_of_the_hubs_name_that_another_hub_took_is_not_applied_into(
    kube_api, synced_hubs
):
    """The hub's namespace was deleted and another portal's hub made one of the same name: it
    counts as gone for this hub, and nothing of this hub's is applied into it."""
    spec, other = synced_hubs
    impostor = dataclasses.replace(spec, hub_id=spec.hub_id + 1)

    report = reconcile(kube_api, [impostor, other], SETTINGS)

    assert report.repaired[impostor.hub_id].namespace_missing
    assert report.repaired[impostor.hub_id].repaired == []
    for kind, name in (("Namespace", spec.namespace), ("Deployment", "hub")):
        labels = k8s.get(kube_api, kind, name, spec.namespace)["metadata"]["labels"]
        assert labels["hub-on-demand.io/hub-id"] == str(spec.hub_id), kind


@pytest.mark.django_db
def test_the_task_records_repairs_and_fails_hubs_whose_namespace_vanished(
    kube_api, kubeconfig_path, settings
):
    settings.KUBECONFIG = str(kubeconfig_path)
    drifting = HubFactory(slug=f"task-rec-{secrets.token_hex(3)}", state=HubState.RUNNING)
    vanished = HubFactory(slug=f"task-gone-{secrets.token_hex(3)}", state=HubState.RUNNING)
    try:
        sync_hub(kube_api, from_hub(drifting), cluster.render_settings())
        client.CoreV1Api(kube_api).delete_namespaced_service("proxy-public", drifting.namespace)

        repairs = {
            action: REGISTRY.get_sample_value(
                "hubondemand_reconcile_repairs_total", {"action": action}
            )
            or 0
            for action in ("reapplied", "namespace_missing")
        }

        summary = tasks.reconcile_hubs()

        assert summary["repaired"] >= 2
        for action, before in repairs.items():
            after = REGISTRY.get_sample_value(
                "hubondemand_reconcile_repairs_total", {"action": action}
            )
            assert after >= before + 1, action
        event = HubEvent.objects.filter(hub=drifting).latest("created")
        assert event.reason == "Repaired: Service proxy-public (missing)"
        assert event.from_state == event.to_state == HubState.RUNNING
        vanished.refresh_from_db()
        assert vanished.state == HubState.FAILED
        assert (
            vanished.state_reason
            == f"Namespace {vanished.namespace} disappeared (or is not its own)"
        )
    finally:
        delete_namespaces(kube_api, drifting)


@pytest.mark.django_db
def test_a_hub_applied_before_it_had_its_own_login_client_gets_one(
    kube_api, kubeconfig_path, settings, registering
):
    settings.KUBECONFIG = str(kubeconfig_path)
    hub = HubFactory(slug=f"task-old-{secrets.token_hex(3)}", state=HubState.RUNNING)
    core = client.CoreV1Api(kube_api)
    try:
        # As applied before the portal registered clients: client hub-<slug>, a made-up secret.
        sync_hub(kube_api, from_hub(hub), cluster.render_settings())

        tasks.reconcile_hubs()

        login = LoginClient.objects.get(hub=hub)
        callback = f"https://{hub.slug}.{settings.HUBS_DOMAIN}/hub/oauth_callback"
        assert registering.client(login.client_id)["redirect_uris"] == [callback]
        config = core.read_namespaced_config_map(CONFIG_MAP_NAME, hub.namespace)
        assert json.loads(config.data[VALUES_FILE_KEY])["oauth"]["client_id"] == login.client_id
        secret = core.read_namespaced_secret(SECRET_NAME, hub.namespace)
        assert base64.b64decode(secret.data["oauth-client-secret"]).decode() == login.client_secret
        repaired = HubEvent.objects.filter(hub=hub).latest("created").reason
        assert "ConfigMap hub (changed)" in repaired and "Secret hub (changed)" in repaired

        events = HubEvent.objects.filter(hub=hub).count()
        tasks.reconcile_hubs()
        assert HubEvent.objects.filter(hub=hub).count() == events
        assert list(LoginClient.objects.filter(hub=hub)) == [login]
    finally:
        delete_namespaces(kube_api, hub)
        hub_clients.remove(hub)


@pytest.mark.django_db
def test_an_identity_provider_that_fails_is_asked_once_per_pass(
    kube_api, kubeconfig_path, settings, registering
):
    """Hubs without a client of their own: after one answer of 503, the pass goes on without
    calling the provider for the others (the next pass tries again)."""
    settings.KUBECONFIG = str(kubeconfig_path)
    hubs = [
        HubFactory(slug=f"task-idp-{secrets.token_hex(3)}", state=HubState.RUNNING)
        for _ in range(3)
    ]
    with http_server(lambda method, path: (503, None)) as (url, asked):
        settings.OIDC_REGISTRATION_URL = f"{url}/register/"
        tasks.reconcile_hubs()

    assert asked == [("POST", "/register/")]
    assert not LoginClient.objects.filter(hub__in=hubs).exists()


def test_a_users_jobs_are_theirs_again_after_drift_and_go_when_they_leave(kube_api, synced_hubs):
    """A jobs namespace's Role that someone widened is restored; the jobs namespace of a
    co-owner who left goes with the next pass, the owner's stays."""
    spec = synced_hubs[1]
    owner, co_owner = spec.jobs_users
    rbac = client.RbacAuthorizationV1Api(kube_api)
    rbac.patch_namespaced_role(
        "jobs",
        spec.jobs_namespace(owner),
        {"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
    )
    left = dataclasses.replace(spec, co_owners=())

    report = reconcile(kube_api, [left], SETTINGS)

    hub = report.repaired[spec.hub_id]
    # The co-owner's account is no longer granted in the users' namespace, nor a member.
    assert set(hub.repaired) == {
        "Role jobs (changed)",
        "ConfigMap hub-admission (changed)",
        "ConfigMap hub-members (changed)",
    }
    assert f"Namespace {spec.jobs_namespace(co_owner)}" in hub.pruned
    role = rbac.read_namespaced_role("jobs", spec.jobs_namespace(owner))
    assert {r for rule in role.rules for r in rule.resources} == {
        "jobs",
        "pods",
        "events",
        "pods/log",
    }
    gone = k8s.get(kube_api, "Namespace", spec.jobs_namespace(co_owner))
    assert gone is None or gone["metadata"].get("deletionTimestamp")
    # Once going, it is not deleted again at every pass.
    again = reconcile(kube_api, [left], SETTINGS)
    assert spec.hub_id not in again.repaired


def test_a_grant_added_by_hand_to_the_admission_params_is_taken_back(kube_api, synced_hubs):
    spec = synced_hubs[1]
    core = client.CoreV1Api(kube_api)
    core.patch_namespaced_config_map(
        "hub-admission", spec.users_namespace, {"data": {"claim.hub-db": "rw"}}
    )

    report = reconcile(kube_api, synced_hubs, SETTINGS)

    assert report.repaired[spec.hub_id].repaired == ["ConfigMap hub-admission (changed)"]
    data = core.read_namespaced_config_map("hub-admission", spec.users_namespace).data
    assert "claim.hub-db" not in data


def test_a_pod_security_label_added_by_hand_is_taken_back_and_others_stay(kube_api, synced_hubs):
    spec = synced_hubs[1]
    core = client.CoreV1Api(kube_api)
    # An older policy version would admit what today's `restricted` refuses.
    added = {"pod-security.kubernetes.io/enforce-version": "v1.22", "team": "physics"}
    core.patch_namespace(spec.users_namespace, {"metadata": {"labels": added}})

    report = reconcile(kube_api, synced_hubs, SETTINGS)

    assert report.repaired[spec.hub_id].repaired == [f"Namespace {spec.users_namespace} (changed)"]
    labels = core.read_namespace(spec.users_namespace).metadata.labels
    assert "pod-security.kubernetes.io/enforce-version" not in labels
    assert labels["team"] == "physics"
    assert reconcile(kube_api, synced_hubs, SETTINGS).repaired == {}


def test_objects_of_another_namespace_with_the_same_hub_id_are_never_pruned(kube_api, synced_hubs):
    spec, other = synced_hubs
    # Another portal (or a test database) may number its hubs the same way.
    twin = dataclasses.replace(other, hub_id=spec.hub_id, slug=f"twin-{secrets.token_hex(3)}")
    sync_hub(kube_api, twin, SETTINGS)
    try:
        report = reconcile(kube_api, [spec], SETTINGS)
        assert report.repaired == {}
        assert k8s.get(kube_api, "Deployment", "hub", twin.namespace)
    finally:
        delete_namespaces(kube_api, twin)
