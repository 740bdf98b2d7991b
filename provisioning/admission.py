"""What the API server itself refuses to a hub member's batch jobs: ValidatingAdmissionPolicies.

A hub with jobs access gives its members' servers the `jobs` ServiceAccount, which may create
Jobs (and read and delete Pods) in the hub's namespace. Without more, such a Job could mount
the hub's Secret, its database claim or another user's home, an NFS export or a host path;
carry the hub's or the proxy's labels and so join their Services and pass their
NetworkPolicies; pin a node, take a high priority, run as the `hub` ServiceAccount or as root.
These policies refuse all of that in admission, whatever the member sends to the API server:

- volumes: only emptyDir, downwardAPI, projected ServiceAccount tokens and downward API, and
  the hub's shared volume read-only (the `jobs` ServiceAccount is shared by the hub's members,
  so nothing here knows whose home a claim would be: no home, and no writes to the shared
  volume, from a job);
- no nodeName, host namespaces, priority class, privileged or root containers;
- only the `jobs` (or `default`) ServiceAccount;
- none of the labels the portal, KubeSpawner and the hub's Services and NetworkPolicies use.

The policies are cluster-wide objects, bound to the portal's hub namespaces by label; they
match requests whose user is the `jobs` ServiceAccount of the namespace the object is in. Pods
that the Job controller makes from a Job's template were checked with the Job.
"""

from __future__ import annotations

from typing import Any

from provisioning.hubconfig import JOBS_SERVICE_ACCOUNT, SHARED_PVC
from provisioning.render import LABEL_HUB_ID, MANAGED_BY, Manifest

API_VERSION = "admissionregistration.k8s.io/v1"
POLICY_PREFIX = "hub-on-demand-member-"
# Label keys that decide what selects a pod: the hub's Services and NetworkPolicies, the
# usage collector, KubeSpawner's bookkeeping.
RESERVED_LABEL_KEYS = ("app.kubernetes.io/component", "app.kubernetes.io/managed-by", "component")
RESERVED_PREFIXES = ("hub-on-demand.io/", "hub.jupyter.org/")
ALLOWED_SERVICE_ACCOUNTS = (JOBS_SERVICE_ACCOUNT, "default")

# Who the policies apply to: the jobs ServiceAccount of the object's own namespace.
MATCH_JOBS_ACCOUNT = (
    f"request.userInfo.username == 'system:serviceaccount:' + request.namespace + "
    f"':{JOBS_SERVICE_ACCOUNT}'"
)


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


def _pod_rules(spec: str, meta: str) -> list[dict[str, str]]:
    """Validations of one pod spec (`spec` and its `meta` as CEL paths)."""
    containers = f"{spec}.containers + (has({spec}.initContainers) ? {spec}.initContainers : [])"
    allowed_volume = (
        "has(v.emptyDir) || has(v.downwardAPI)"
        " || (has(v.projected) && v.projected.sources.all(s,"
        " has(s.serviceAccountToken) || has(s.downwardAPI)))"
        f" || (has(v.persistentVolumeClaim) && v.persistentVolumeClaim.claimName == '{SHARED_PVC}'"
        " && has(v.persistentVolumeClaim.readOnly) && v.persistentVolumeClaim.readOnly)"
    )
    reserved = f"!(k in {_cel_list(RESERVED_LABEL_KEYS)})" + "".join(
        f" && !k.startsWith('{prefix}')" for prefix in RESERVED_PREFIXES
    )
    accounts = _cel_list(ALLOWED_SERVICE_ACCOUNTS)
    reserved_names = ", ".join([*RESERVED_LABEL_KEYS, *(p + "*" for p in RESERVED_PREFIXES)])
    return [
        {
            "expression": f"!has({spec}.volumes) || {spec}.volumes.all(v, {allowed_volume})",
            "message": (
                "A member's job may mount only emptyDir, downwardAPI, its ServiceAccount token "
                f"and the hub's shared volume ({SHARED_PVC}) read-only: no Secrets, no other "
                "claims (the hub's database, users' homes), no NFS, host paths or other volumes."
            ),
        },
        {
            "expression": f"!has({spec}.nodeName) || {spec}.nodeName == ''",
            "message": "A member's job may not choose its node (nodeName).",
        },
        {
            "expression": (
                f"!(has({spec}.hostNetwork) && {spec}.hostNetwork)"
                f" && !(has({spec}.hostPID) && {spec}.hostPID)"
                f" && !(has({spec}.hostIPC) && {spec}.hostIPC)"
            ),
            "message": "A member's job may not use the node's network, PID or IPC namespace.",
        },
        {
            "expression": f"!has({spec}.priorityClassName) || {spec}.priorityClassName == ''",
            "message": "A member's job may not set a priority class.",
        },
        {
            "expression": (
                f"(!has({spec}.serviceAccountName) || {spec}.serviceAccountName in {accounts})"
                f" && (!has({spec}.serviceAccount) || {spec}.serviceAccount in {accounts})"
            ),
            "message": (
                f"A member's job runs as the {JOBS_SERVICE_ACCOUNT} ServiceAccount (or default), "
                "never as the hub's."
            ),
        },
        {
            "expression": (
                f"(has({spec}.securityContext) && has({spec}.securityContext.runAsNonRoot)"
                f" && {spec}.securityContext.runAsNonRoot)"
                f" || ({containers}).all(c, has(c.securityContext)"
                " && has(c.securityContext.runAsNonRoot) && c.securityContext.runAsNonRoot)"
            ),
            "message": "A member's job must run as non-root (securityContext.runAsNonRoot: true).",
        },
        {
            "expression": (
                f"({containers}).all(c, !has(c.securityContext)"
                " || !has(c.securityContext.privileged) || !c.securityContext.privileged)"
            ),
            "message": "A member's job may not run privileged containers.",
        },
        {
            "expression": (
                f"!has({meta}) || !has({meta}.labels) || {meta}.labels.all(k, {reserved})"
            ),
            "message": (
                "A member's job may not carry the labels of the hub, the proxy or user servers "
                f"({reserved_names})."
            ),
        },
    ]


def _policy(name: str, resources: list[dict[str, Any]], spec: str, meta: str) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": resources},
            "matchConditions": [{"name": "jobs-service-account", "expression": MATCH_JOBS_ACCOUNT}],
            "validations": _pod_rules(spec, meta),
        },
    }


def _binding(policy: str) -> Manifest:
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy, "labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
        "spec": {
            "policyName": policy,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {
                    "matchLabels": {"app.kubernetes.io/managed-by": MANAGED_BY},
                    "matchExpressions": [{"key": LABEL_HUB_ID, "operator": "Exists"}],
                }
            },
        },
    }


def jobs_admission() -> list[Manifest]:
    """The policies (for Pods and for Jobs' pod templates) and their bindings; cluster-wide,
    the same for every hub."""
    write = ["CREATE", "UPDATE"]
    pods = _policy(
        f"{POLICY_PREFIX}pods",
        [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": write}],
        "object.spec",
        "object.metadata",
    )
    jobs = _policy(
        f"{POLICY_PREFIX}jobs",
        [
            {
                "apiGroups": ["batch"],
                "apiVersions": ["v1"],
                "resources": ["jobs"],
                "operations": write,
            }
        ],
        "object.spec.template.spec",
        "object.spec.template.metadata",
    )
    return [pods, jobs, _binding(pods["metadata"]["name"]), _binding(jobs["metadata"]["name"])]
