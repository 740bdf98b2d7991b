"""What the API server itself refuses where users run things: ValidatingAdmissionPolicies.

Every hub has its own namespace, where only the portal writes, its users' namespace, where the
hub starts user servers, and with jobs access one jobs namespace per user with Jobs (see
`HubSpec.jobs_namespace`), where that user's server creates Jobs with its own ServiceAccount.
These policies hold in every users' and jobs namespace, whoever sends the request (the hub, a
member, the Job controller, a cluster admin's typo):

- volumes: emptyDir, downwardAPI, projected ServiceAccount tokens (with the cluster's CA and
  the downward API), users' home claims, and the claims and NFS exports the hub was granted
  from the catalogue, in the mode granted; never a Secret, a host path, an inline network
  volume that is not the catalogue's, or any other claim; no Secret in the environment;
- no nodeName, host namespaces, privileged containers, priority classes outside the
  installation's list, ServiceAccounts other than the namespace's `default` and (in the users'
  namespace) those of users with Jobs.

What a namespace was granted is its `hub-admission` ConfigMap, which the portal writes and
nobody in the namespace may change; the policies read it as their params.

Everything in a jobs namespace is a member's and is held to more: no claim at all (claims live
in the users' namespace), non-root containers, and none of the labels that the portal,
KubeSpawner and the hub's Services and NetworkPolicies select on. Pods that the Job controller
makes from a Job's template are held to the same rules as the Job.
"""

from __future__ import annotations

from typing import Any

from provisioning.render import (
    ADMISSION_PARAMS,
    LABEL_NAMESPACE_ROLE,
    MANAGED_BY,
    ROLE_JOBS,
    ROLE_USERS,
    Manifest,
)

API_VERSION = "admissionregistration.k8s.io/v1"
POLICY_PREFIX = "hub-on-demand-member-"
# Label keys that decide what selects a pod: the hub's Services and NetworkPolicies, the
# usage collector, KubeSpawner's bookkeeping.
RESERVED_LABEL_KEYS = ("app.kubernetes.io/component", "app.kubernetes.io/managed-by", "component")
RESERVED_PREFIXES = ("hub-on-demand.io/", "hub.jupyter.org/")
HOME_PREFIX = "home-"

# A member's object: anything in a user's jobs namespace.
MEMBER = (
    f"has(namespaceObject.metadata.labels) && '{LABEL_NAMESPACE_ROLE}' in "
    f"namespaceObject.metadata.labels && namespaceObject.metadata.labels['{LABEL_NAMESPACE_ROLE}']"
    f" == '{ROLE_JOBS}'"
)


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


def _granted(key: str) -> str:
    """CEL: whether the namespace's params grant `key` (a CEL string expression)."""
    return f"({key}) in params.data"


def _allowed_volume(member: bool) -> str:
    """CEL over one volume `v`: allowed in a users' namespace, or (`member`) in a jobs
    namespace, where no claim is."""
    claim = "v.persistentVolumeClaim"
    read_only = f"(has({claim}.readOnly) && {claim}.readOnly)"
    granted_claim = f"'claim.' + {claim}.claimName"
    claim_ok = (
        f"({claim}.claimName.startsWith('{HOME_PREFIX}') || ({_granted(granted_claim)}"
        f" && (params.data[{granted_claim}] == 'rw' || {read_only})))"
    )
    nfs_read_only = "(has(v.nfs.readOnly) && v.nfs.readOnly)"
    export = "v.nfs.server + ':' + v.nfs.path"
    nfs_ok = (
        "params.data.exists(k, k.startsWith('nfs.')"
        f" && (params.data[k] == 'rw:' + {export}"
        f" || (params.data[k] == 'ro:' + {export} && {nfs_read_only})))"
    )
    projected = (
        "v.projected.sources.all(s, has(s.serviceAccountToken) || has(s.downwardAPI)"
        " || (has(s.configMap) && s.configMap.name == 'kube-root-ca.crt'))"
    )
    allowed = f"has(v.emptyDir) || has(v.downwardAPI) || (has(v.projected) && {projected})"
    allowed += f" || (has(v.nfs) && {nfs_ok})"
    if not member:
        allowed += f" || (has(v.persistentVolumeClaim) && {claim_ok})"
    return allowed


def _pod_rules(spec: str, meta: str) -> list[dict[str, str]]:
    """Validations of one pod spec (`spec` and its `meta` as CEL paths); those for members
    only hold when the request is a member's (`variables.member`)."""
    containers = f"{spec}.containers + (has({spec}.initContainers) ? {spec}.initContainers : [])"
    reserved = f"!(k in {_cel_list(RESERVED_LABEL_KEYS)})" + "".join(
        f" && !k.startsWith('{prefix}')" for prefix in RESERVED_PREFIXES
    )
    reserved_names = ", ".join([*RESERVED_LABEL_KEYS, *(p + "*" for p in RESERVED_PREFIXES)])
    volumes = f"!has({spec}.volumes) || {spec}.volumes.all(v, %s)"
    account = "'account.' + {0}"
    priority = _granted(f"'priority.' + {spec}.priorityClassName")
    return [
        {
            "expression": volumes % _allowed_volume(member=False),
            "message": (
                "In a hub's users' namespace a pod may mount only emptyDir, downwardAPI, its "
                "ServiceAccount token, users' homes and the volumes the hub was granted (in the "
                "mode granted): no Secrets, host paths, other claims or other network volumes."
            ),
        },
        {
            "expression": f"variables.member == false || {volumes % _allowed_volume(member=True)}",
            "message": (
                "A member's job may mount only emptyDir, downwardAPI, its ServiceAccount token "
                "and the NFS exports the hub was granted: no Secrets, no claims (homes, the "
                "shared volume, the hub's database), no other network volumes or host paths."
            ),
        },
        {
            "expression": (
                f"({containers}).all(c, (!has(c.env) || c.env.all(e, !has(e.valueFrom)"
                " || !has(e.valueFrom.secretKeyRef)))"
                " && (!has(c.envFrom) || c.envFrom.all(e, !has(e.secretRef))))"
            ),
            "message": "In a hub's users' namespace no container reads a Secret.",
        },
        {
            "expression": f"!has({spec}.nodeName) || {spec}.nodeName == ''",
            "message": "In a hub's users' namespace a pod may not choose its node (nodeName).",
        },
        {
            "expression": (
                f"!(has({spec}.hostNetwork) && {spec}.hostNetwork)"
                f" && !(has({spec}.hostPID) && {spec}.hostPID)"
                f" && !(has({spec}.hostIPC) && {spec}.hostIPC)"
            ),
            "message": (
                "In a hub's users' namespace a pod may not use the node's network, PID or IPC "
                "namespace."
            ),
        },
        {
            "expression": (
                f"!has({spec}.priorityClassName) || {spec}.priorityClassName == '' || {priority}"
            ),
            "message": (
                "In a hub's users' namespace a pod may not set a priority class outside the "
                "installation's list."
            ),
        },
        {
            "expression": (
                f"(!has({spec}.serviceAccountName) || {spec}.serviceAccountName == ''"
                f" || {_granted(account.format(spec + '.serviceAccountName'))})"
                f" && (!has({spec}.serviceAccount) || {spec}.serviceAccount == ''"
                f" || {_granted(account.format(spec + '.serviceAccount'))})"
            ),
            "message": (
                "In a hub's users' namespace a pod runs as the default ServiceAccount or as "
                "the jobs ServiceAccount of a user with Jobs, in a jobs namespace as the "
                "default one; never as the hub's."
            ),
        },
        {
            "expression": (
                f"({containers}).all(c, !has(c.securityContext)"
                " || !has(c.securityContext.privileged) || !c.securityContext.privileged)"
            ),
            "message": "In a hub's users' namespace no container runs privileged.",
        },
        {
            "expression": (
                "variables.member == false"
                f" || (has({spec}.securityContext) && has({spec}.securityContext.runAsNonRoot)"
                f" && {spec}.securityContext.runAsNonRoot)"
                f" || ({containers}).all(c, has(c.securityContext)"
                " && has(c.securityContext.runAsNonRoot) && c.securityContext.runAsNonRoot)"
            ),
            "message": "A member's job must run as non-root (securityContext.runAsNonRoot: true).",
        },
        {
            "expression": (
                f"variables.member == false || !has({meta}) || !has({meta}.labels)"
                f" || {meta}.labels.all(k, {reserved})"
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
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {"resourceRules": resources},
            "variables": [{"name": "member", "expression": MEMBER}],
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
            # The namespace's own ConfigMap; without it nothing is admitted there.
            "paramRef": {"name": ADMISSION_PARAMS, "parameterNotFoundAction": "Deny"},
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {
                    "matchLabels": {"app.kubernetes.io/managed-by": MANAGED_BY},
                    "matchExpressions": [
                        {
                            "key": LABEL_NAMESPACE_ROLE,
                            "operator": "In",
                            "values": [ROLE_USERS, ROLE_JOBS],
                        }
                    ],
                }
            },
        },
    }


def users_admission() -> list[Manifest]:
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
