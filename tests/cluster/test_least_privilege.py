"""The portal's least privilege, as the Helm chart installs it: the worker and the hub watcher
run with the chart's ServiceAccount (a TokenRequest token in a kubeconfig) through a hub's
whole life without a single Forbidden, and that identity can reach nothing beyond hubs'
namespaces: the API server's RBAC and the chart's admission guard refuse it."""

from __future__ import annotations

import base64
import functools
import json
import secrets
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub, SelfServicePolicy
from provisioning import k8s
from provisioning.admission import users_admission
from provisioning.reconcile import PassReport, per_hub_kinds
from tests.chart.conftest import (  # noqa: F401 (fixtures)
    CHART,
    REQUIRED,
    Helm,
    helm_binary,
    kubectl,
)
from tests.support import eventually

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


class Installed:
    """The chart's ServiceAccount and RBAC in a namespace of their own, and a client that
    speaks as that ServiceAccount."""

    def __init__(self, release: str, namespace: str, kubeconfig: Path):
        self.release, self.namespace, self.kubeconfig = release, namespace, kubeconfig
        self.fullname = f"{release}-hub-on-demand"
        self.account = self.fullname
        self.user = f"system:serviceaccount:{namespace}:{self.account}"

    @functools.cached_property
    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))


def _rendered(binary: Path, release: str, namespace: str) -> list[dict]:
    objects = Helm(binary).template(
        REQUIRED,
        release,
        namespace,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    )
    assert {o["kind"] for o in objects} >= {"ServiceAccount", "ClusterRole", "RoleBinding"}
    return objects


def _kubeconfig_for(kube_api, kubeconfig_path: Path, namespace: str, account: str, to: Path):
    """A kubeconfig with a token of `account` from the TokenRequest API, for the same server."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = (
        client.CoreV1Api(kube_api)
        .create_namespaced_service_account_token(account, namespace, request)
        .status.token
    )
    admin = yaml.safe_load(kubeconfig_path.read_text())
    cluster = admin["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority"))
        if not ca.is_absolute():
            ca = kubeconfig_path.parent / ca
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    to.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "portal", "context": {"cluster": "local", "user": account}}],
                "current-context": "portal",
            }
        )
    )


@pytest.fixture
def installed(helm_binary, kubectl, kube_api, kubeconfig_path, tmp_path):  # noqa: F811
    release = f"lp{secrets.token_hex(3)}"
    namespace = f"portal-{release}"
    kubectl("create", "namespace", namespace)
    objects = _rendered(helm_binary, release, namespace)
    kubectl(
        "apply", "-n", namespace, "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects)
    )
    cluster_wide = [o for o in objects if not o["metadata"].get("namespace")]
    portal = Installed(release, namespace, tmp_path / "portal.kubeconfig")
    account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    assert account == portal.account
    _kubeconfig_for(kube_api, kubeconfig_path, namespace, account, portal.kubeconfig)
    # The guard is in force once the API server has compiled it: until then, wait.
    eventually(lambda: _refused_namespace(portal, kube_api) is not None, timeout=30)
    yield portal
    for item in cluster_wide:
        kubectl("delete", item["kind"], item["metadata"]["name"], "--ignore-not-found")
    kubectl("delete", "namespace", namespace, "--wait=false")


def _refused_namespace(portal: Installed, admin_api) -> str | None:
    """The guard's refusal of a namespace that is not a hub's, or None if it was made (and is
    deleted again as an admin: the guard may have come into force in between)."""
    name = f"not-a-hub-{secrets.token_hex(3)}"
    try:
        k8s.apply(portal.api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except k8s.ClusterError as error:
        return error.message
    k8s.delete_namespace(admin_api, name)
    return None


def _review(kube_api, user: str, namespace: str, verb: str, resource: str, **more) -> bool:
    """What the API server's authorizer says `user` (a ServiceAccount) may do."""
    account_namespace = user.split(":")[2]
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{account_namespace}",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, resource=resource, **more
            ),
        )
    )
    return client.AuthorizationV1Api(kube_api).create_subject_access_review(review).status.allowed


def test_the_portals_identity_reaches_nothing_beyond_hub_namespaces(kube_api, installed):
    portal, user = installed, installed.user
    assert not _review(kube_api, user, "kube-system", "get", "secrets")
    assert not _review(kube_api, user, "kube-system", "list", "secrets")
    assert not _review(kube_api, user, "", "list", "secrets")  # across the cluster
    for namespace in ("default", "kube-system", portal.namespace):
        assert not _review(kube_api, user, namespace, "create", "pods")
        assert not _review(kube_api, user, namespace, "create", "configmaps")
    assert not _review(
        kube_api, user, "", "create", "clusterrolebindings", group="rbac.authorization.k8s.io"
    )
    for role in ("cluster-admin", "admin", "edit"):
        assert not _review(
            kube_api, user, "", "bind", "clusterroles", group="rbac.authorization.k8s.io", name=role
        )
    assert not _review(
        kube_api, user, "", "escalate", "clusterroles", group="rbac.authorization.k8s.io"
    )
    assert not _review(
        kube_api, user, "", "create", "clusterroles", group="rbac.authorization.k8s.io"
    )
    # What it needs across the cluster, it has.
    assert _review(kube_api, user, "", "list", "nodes")
    assert _review(kube_api, user, "", "create", "namespaces")
    # So reconcile reads Secrets hub by hub with these credentials, across the cluster with
    # an admin's.
    assert per_hub_kinds(portal.api, PassReport(hubs=0)) == ("Secret",)
    assert per_hub_kinds(kube_api, PassReport(hubs=0)) == ()


def test_the_guard_refuses_what_rbac_alone_would_let_through(kube_api, installed):
    """RBAC cannot tell kube-system from a hub namespace; the chart's admission guard does."""
    portal = installed
    assert "only hub namespaces" in _refused_namespace(portal, kube_api)
    # Taking over a namespace that is not a hub's by labelling it as one.
    with pytest.raises(k8s.ClusterError) as relabel:
        k8s.merge_patch(
            portal.api,
            "Namespace",
            "kube-system",
            None,
            {"metadata": {"labels": {"app.kubernetes.io/managed-by": "hub-on-demand"}}},
        )
    assert relabel.value.status in (403, 422)
    with pytest.raises(k8s.ClusterError):
        k8s.delete_namespace(portal.api, "default")
    assert client.CoreV1Api(kube_api).read_namespace("default").status.phase == "Active"
    # Binding itself its hub-namespace rights in kube-system: RBAC allows the verb, the guard
    # refuses the namespace.
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "take-over", "namespace": "kube-system"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": f"{portal.fullname}-hub-namespace",
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": portal.account, "namespace": portal.namespace}
        ],
    }
    with pytest.raises(k8s.ClusterError) as take_over:
        k8s.apply(portal.api, binding)
    assert "binds roles only in hub namespaces" in take_over.value.message
    # And in a hub namespace, a role it does not hold: the API server's escalation check.
    hub_namespace = f"hub-lp-{secrets.token_hex(3)}"
    k8s.apply(
        portal.api,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": hub_namespace,
                "labels": {"app.kubernetes.io/managed-by": "hub-on-demand"},
            },
        },
    )
    try:
        escalate = {
            **binding,
            "metadata": {"name": "escalate", "namespace": hub_namespace},
            "roleRef": {**binding["roleRef"], "name": "cluster-admin"},
        }
        with pytest.raises(k8s.ClusterError) as refused:
            k8s.apply(portal.api, escalate)
        assert refused.value.status == 403
    finally:
        k8s.delete_namespace(portal.api, hub_namespace)


def test_the_admission_policies_the_chart_lets_the_portal_change_are_the_portals():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    names = {manifest["metadata"]["name"] for manifest in users_admission()}
    assert set(values["rbac"]["admissionPolicies"]) == names


def test_the_portal_binds_its_role_only_when_the_chart_makes_it(helm_binary):  # noqa: F811
    def rendered(create: bool) -> list[dict]:
        values = {**REQUIRED, "rbac": {"create": create}}
        return Helm(helm_binary).template(values, "portal", "ops")

    with_rbac = rendered(True)
    (settings,) = [o for o in with_rbac if o["kind"] == "ConfigMap"]
    assert settings["data"]["HUB_PORTAL_ROLE"] == "portal-hub-on-demand-hub-namespace"
    assert settings["data"]["HUB_PORTAL_ACCOUNT"] == "ops/portal-hub-on-demand"
    roles = {o["metadata"]["name"] for o in with_rbac if o["kind"] == "ClusterRole"}
    assert settings["data"]["HUB_PORTAL_ROLE"] in roles

    without = rendered(False)
    (settings,) = [o for o in without if o["kind"] == "ConfigMap"]
    assert "HUB_PORTAL_ROLE" not in settings["data"]
    assert not [o for o in without if o["kind"].startswith(("ClusterRole", "ValidatingAdmission"))]


def test_a_hubs_whole_life_with_the_charts_service_account(
    api, alice, payload, kube_api, installed, workers, broker_url
):
    portal = installed
    env = {
        "KUBECONFIG": str(portal.kubeconfig),
        "HUB_PORTAL_ROLE": f"{portal.fullname}-hub-namespace",
        "HUB_PORTAL_ACCOUNT": f"{portal.namespace}/{portal.account}",
        "HUB_WATCH_LEASE_NAMESPACE": portal.namespace,
    }
    workers.env.update(env)
    workers.lease = f"{portal.fullname}-watcher"
    workers.start_watcher()
    workers.start()

    slug = f"lp-{secrets.token_hex(3)}"
    api.force_authenticate(alice)
    created = api.post("/api/v1/hubs/", payload(slug=slug, expected_users=5), format="json")
    assert created.status_code == 201, created.content
    hub_id = created.json()["id"]

    def state(*wanted):
        hub = Hub.objects.get(pk=hub_id)
        assert hub.state != HubState.FAILED, hub.state_reason
        return hub.state in wanted

    eventually(lambda: state(HubState.RUNNING), timeout=120)
    core = client.CoreV1Api(kube_api)
    for namespace in (f"hub-{slug}", f"hub-{slug}-users"):
        binding = client.RbacAuthorizationV1Api(kube_api).read_namespaced_role_binding(
            "hub-on-demand-portal", namespace
        )
        assert binding.role_ref.name == env["HUB_PORTAL_ROLE"]

    # A change: jobs access on, which adds the owner's jobs namespace (bound too).
    from portal.hubs import revisions
    from portal.hubs.services import changes

    SelfServicePolicy.objects.update(jobs_access_needs_approval=False)
    hub = Hub.objects.get(pk=hub_id)
    data = revisions.form_data(revisions.spec_of_hub(hub))
    data["jobs_access"] = "on"
    change = changes.request_change(hub, alice, data)
    eventually(lambda: type(change).objects.get(pk=change.pk).state, equals="applied", timeout=120)
    eventually(lambda: state(HubState.RUNNING), timeout=120)
    jobs = [
        ns.metadata.name
        for ns in core.list_namespace(label_selector=f"hub-on-demand.io/hub-id={hub_id}").items
        if "-jobs-" in ns.metadata.name
    ]
    assert len(jobs) == 1

    # Reconcile repairs what drifted; the usage pass reads the cluster.
    from portal.hubs import tasks
    from portal.usage import tasks as usage_tasks
    from portal.usage.models import CollectionPass

    core.delete_namespaced_config_map("hub-members", f"hub-{slug}")
    tasks.reconcile_hubs.delay()
    eventually(lambda: _exists(core, "hub-members", f"hub-{slug}"), timeout=120)
    passes = CollectionPass.objects.count()
    usage_tasks.collect_usage.delay()
    eventually(lambda: CollectionPass.objects.count() > passes, timeout=120)

    deleted = api.delete(f"/api/v1/hubs/{hub_id}/")
    assert deleted.status_code == 202
    eventually(lambda: state(HubState.DELETED), timeout=120)

    logs = "\n".join([workers.log(i) for i in range(len(workers.processes))])
    logs += workers.watcher_log()
    assert "Forbidden" not in logs and '"status": 403' not in logs, logs[-3000:]


def _exists(core, name: str, namespace: str) -> bool:
    try:
        core.read_namespaced_config_map(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True
