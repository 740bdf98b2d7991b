"""A thin layer over the `kubernetes` client: connect, server-side apply, classify errors."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from provisioning.errors import ServiceError
from provisioning.render import FIELD_MANAGER, Manifest


@dataclass(frozen=True)
class Kind:
    """Where the API serves one kind of object."""

    api_path: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    namespaced: bool


KINDS: dict[str, Kind] = {
    "Namespace": Kind("/api/v1", "namespaces", False),
    "ResourceQuota": Kind("/api/v1", "resourcequotas", True),
    "LimitRange": Kind("/api/v1", "limitranges", True),
    "Service": Kind("/api/v1", "services", True),
    "Pod": Kind("/api/v1", "pods", True),
    "ServiceAccount": Kind("/api/v1", "serviceaccounts", True),
    "Secret": Kind("/api/v1", "secrets", True),
    "ConfigMap": Kind("/api/v1", "configmaps", True),
    "PersistentVolumeClaim": Kind("/api/v1", "persistentvolumeclaims", True),
    "PersistentVolume": Kind("/api/v1", "persistentvolumes", False),
    "Deployment": Kind("/apis/apps/v1", "deployments", True),
    "NetworkPolicy": Kind("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "Ingress": Kind("/apis/networking.k8s.io/v1", "ingresses", True),
    "Role": Kind("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": Kind("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "Job": Kind("/apis/batch/v1", "jobs", True),
    "PriorityClass": Kind("/apis/scheduling.k8s.io/v1", "priorityclasses", False),
    "ValidatingAdmissionPolicy": Kind(
        "/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicies", False
    ),
    "ValidatingAdmissionPolicyBinding": Kind(
        "/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", False
    ),
}


class ClusterError(ServiceError):
    """The cluster refused or failed a request; `transient` says whether retrying may help."""


def api_message(error: ApiException) -> str:
    """The API server's own explanation from an error response, else the HTTP reason."""
    try:
        body = json.loads(error.body or "")
        return body.get("message") or error.reason or str(error)
    except (ValueError, AttributeError):
        return f"{error.status} {error.reason}".strip()


def classify(error: Exception) -> ClusterError:
    """Map a client exception to a ClusterError: 5xx, 429 and network errors are transient."""
    if isinstance(error, ClusterError):
        return error
    if isinstance(error, ApiException):
        status = error.status or 0
        transient = status == 0 or status >= 500 or status == 429
        return ClusterError(api_message(error), transient=transient, status=status)
    if isinstance(error, urllib3.exceptions.HTTPError | OSError | TimeoutError):
        return ClusterError(f"cannot reach the Kubernetes API server: {error}", transient=True)
    raise error


_local = threading.local()


def api_client(kubeconfig: str | Path | None) -> client.ApiClient:
    """An ApiClient for a cluster: from a kubeconfig file, or with None from the in-cluster
    service account; cached per thread and per kubeconfig."""
    key = str(kubeconfig or "in-cluster")
    cache = getattr(_local, "clients", None)
    if cache is None:
        cache = _local.clients = {}
    if key not in cache:
        try:
            if kubeconfig:
                api = config.new_client_from_config(config_file=str(kubeconfig))
            else:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api = client.ApiClient(configuration)
        except (config.ConfigException, OSError) as error:
            where = f"the kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster config"
            raise ClusterError(
                f"The portal has no usable Kubernetes configuration ({where}: {error}). Set "
                "KUBECONFIG, or run the workers in the cluster with a service account.",
                transient=False,
            ) from error
        # Fail fast and let the task's retry policy handle outages, instead of urllib3's
        # own retries stacking up inside one task run.
        api.configuration.retries = 1
        cache[key] = api
    return cache[key]


def object_path(manifest: Manifest) -> str:
    """The REST path of the object a manifest describes."""
    kind = KINDS[manifest["kind"]]
    meta = manifest["metadata"]
    if kind.namespaced:
        return f"{kind.api_path}/namespaces/{meta['namespace']}/{kind.plural}/{meta['name']}"
    return f"{kind.api_path}/{kind.plural}/{meta['name']}"


def collection_path(kind_name: str, namespace: str | None) -> str:
    kind = KINDS[kind_name]
    if kind.namespaced:
        return f"{kind.api_path}/namespaces/{namespace}/{kind.plural}"
    return f"{kind.api_path}/{kind.plural}"


REQUEST_TIMEOUT = (5, 30)


def _call(api: client.ApiClient, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
    data = raw_call(api, method, path, **kwargs)
    return json.loads(data) if data else None


def raw_call(
    api: client.ApiClient,
    method: str,
    path: str,
    timeout: float | tuple[float, float] = REQUEST_TIMEOUT,
    **kwargs: Any,
) -> bytes:
    """One API request; the response body as bytes (errors classified as ClusterError)."""
    try:
        response = api.call_api(
            path,
            method,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout,
            **kwargs,
        )
    except Exception as error:  # classified and re-raised below
        raise classify(error) from error
    return response.data


def server_version(api: client.ApiClient, timeout: float = 2.0) -> str:
    """The API server's version (GET /version, which any identity may read): the cheapest
    call that shows the API server answers the portal's credentials."""
    answer = json.loads(raw_call(api, "GET", "/version", timeout=(timeout, timeout)))
    return str(answer.get("gitVersion", ""))


def apply(
    api: client.ApiClient,
    manifest: Manifest,
    dry_run: bool = False,
    field_manager: str = FIELD_MANAGER,
) -> dict[str, Any]:
    """Server-side apply one object with the portal's field manager, taking over fields that
    someone else changed (the portal's record is the source of truth). With `dry_run` the
    API server validates and admits the object without storing it. Fields set under another
    `field_manager` are not the portal's: a later apply that leaves them out keeps them,
    except those `foreign_fields` names."""
    query = [("fieldManager", field_manager), ("force", "true")]
    if dry_run:
        query.append(("dryRun", "All"))
    result = _call(
        api,
        "PATCH",
        object_path(manifest),
        query_params=query,
        header_params={
            "Content-Type": "application/apply-patch+yaml",
            "Accept": "application/json",
        },
        body=manifest,
    )
    result = result or {}
    foreign = foreign_fields(manifest, result)
    if foreign and not dry_run:
        meta = manifest["metadata"]
        result = merge_patch(api, manifest["kind"], meta["name"], meta.get("namespace"), foreign)
    return result


# Labels whose meaning the portal decides: what a namespace is (its role, its hub), and how
# strictly Pod Security admits its pods.
OWNED_LABEL_PREFIXES = ("hub-on-demand.io/", "pod-security.kubernetes.io/")


def foreign_fields(manifest: Manifest, live: dict[str, Any]) -> dict[str, Any]:
    """A merge patch removing what someone else added where the portal's object must hold
    exactly what the portal says (empty when nothing was added): keys of a ConfigMap's data
    (a namespace's admission params grant by key) and labels under the portal's and Pod
    Security's prefixes (`pod-security.kubernetes.io/enforce-version` pins an older policy)."""
    patch: dict[str, Any] = {}
    if manifest["kind"] == "ConfigMap":
        extra = set(live.get("data") or {}) - set(manifest.get("data") or {})
        if extra:
            patch["data"] = dict.fromkeys(sorted(extra))
    wanted = manifest["metadata"].get("labels") or {}
    labels = [
        key
        for key in (live.get("metadata") or {}).get("labels") or {}
        if key.startswith(OWNED_LABEL_PREFIXES) and key not in wanted
    ]
    if labels:
        patch["metadata"] = {"labels": dict.fromkeys(sorted(labels))}
    return patch


def may(api: client.ApiClient, verb: str, resource: str, namespace: str, group: str = "") -> bool:
    """Whether these credentials may `verb` `resource` in `namespace` (a SelfSubjectAccessReview,
    which every authenticated identity may make)."""
    review = _call(
        api,
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "resource": resource,
                    "group": group,
                    "namespace": namespace,
                }
            },
        },
    )
    return bool(((review or {}).get("status") or {}).get("allowed"))


def merge_patch(
    api: client.ApiClient, kind: str, name: str, namespace: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    """JSON merge patch of one object (a None value removes a field)."""
    manifest = {"kind": kind, "metadata": {"name": name, "namespace": namespace}}
    result = _call(
        api,
        "PATCH",
        object_path(manifest),
        header_params={
            "Content-Type": "application/merge-patch+json",
            "Accept": "application/json",
        },
        body=body,
    )
    return result or {}


def get(api: client.ApiClient, kind: str, name: str, namespace: str | None = None) -> dict | None:
    """Read one object; None when it does not exist."""
    manifest = {"kind": kind, "metadata": {"name": name, "namespace": namespace}}
    try:
        return _call(
            api, "GET", object_path(manifest), header_params={"Accept": "application/json"}
        )
    except ClusterError as error:
        if error.status == 404:
            return None
        raise


def list_objects(
    api: client.ApiClient,
    kind: str,
    namespace: str | None,
    label_selector: str,
    all_namespaces: bool = False,
) -> list[dict[str, Any]]:
    """List objects of one kind by label selector (one API call), in one namespace or, with
    `all_namespaces`, across the cluster."""
    path = f"{KINDS[kind].api_path}/{KINDS[kind].plural}" if all_namespaces else None
    result = _call(
        api,
        "GET",
        path or collection_path(kind, namespace),
        query_params=[("labelSelector", label_selector)],
        header_params={"Accept": "application/json"},
    )
    return (result or {}).get("items", [])


def list_with_version(
    api: client.ApiClient, kind: str, label_selector: str
) -> tuple[list[dict[str, Any]], str]:
    """Every object of one kind across the cluster by label selector, with the list's
    resourceVersion (where a watch starts from)."""
    path = f"{KINDS[kind].api_path}/{KINDS[kind].plural}"
    result = (
        _call(
            api,
            "GET",
            path,
            query_params=[("labelSelector", label_selector)],
            header_params={"Accept": "application/json"},
        )
        or {}
    )
    return result.get("items", []), result.get("metadata", {}).get("resourceVersion", "")


def delete(api: client.ApiClient, kind: str, name: str, namespace: str | None = None) -> bool:
    """Delete one object (in the background); False when it is already gone."""
    manifest = {"kind": kind, "metadata": {"name": name, "namespace": namespace}}
    try:
        _call(
            api,
            "DELETE",
            object_path(manifest),
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body={"propagationPolicy": "Background"},
        )
    except ClusterError as error:
        if error.status == 404:
            return False
        raise
    return True


def delete_namespace(api: client.ApiClient, name: str) -> bool:
    """Ask for a namespace's deletion; False when it is already gone."""
    return delete(api, "Namespace", name)
