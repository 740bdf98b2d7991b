"""The portal's side of the cluster: provisioning's library configured from Django settings.

`provisioning` takes plain settings objects and an API client; this module builds them from
`portal/settings.py` (the kubeconfig, the images and ingress, the identity provider hubs log in
with) so that tasks, previews and the admin pages all render and connect the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from portal.accounts import oidc
from provisioning import k8s
from provisioning.hubapi import HubServers
from provisioning.render import SECRET_NAME, HubSecrets, IdentityProvider, RenderSettings
from provisioning.spec import HubSpec

if TYPE_CHECKING:
    from kubernetes import client

# What previews show for the hub's login endpoints while the identity provider is away.
UNKNOWN_ENDPOINT = "(the identity provider could not be reached)"


def api_client() -> client.ApiClient:
    """The Kubernetes API client of the configured cluster (KUBECONFIG, else in-cluster)."""
    return k8s.api_client(settings.KUBECONFIG or None)


def render_settings(preview: bool = False) -> RenderSettings:
    """Installation-wide rendering choices from Django settings.

    An issuer that cannot be discovered is a transient error for provisioning; a `preview`
    (the change diff page) renders the hub's login endpoints as unknown instead."""
    return RenderSettings(
        hub_image=settings.HUB_IMAGE,
        proxy_image=settings.PROXY_IMAGE,
        ingress_class=settings.INGRESS_CLASS,
        ingress_annotations=settings.INGRESS_ANNOTATIONS,
        ingress_namespace=settings.INGRESS_NAMESPACE,
        storage_class=settings.HUB_STORAGE_CLASS,
        egress=settings.HUB_EGRESS,
        denied_egress=settings.HUB_DENIED_EGRESS,
        api_server_cidrs=settings.HUB_API_SERVER_CIDRS,
        priority_classes=settings.HUB_PRIORITY_CLASSES,
        placeholder_image=settings.WARM_PLACEHOLDER_IMAGE,
        quota_caps=settings.HUB_QUOTA_CAPS,
        identity_provider=_hub_login_settings(preview),
        portal_role=settings.HUB_PORTAL_ROLE,
        portal_account=settings.HUB_PORTAL_ACCOUNT,
        node_selector=settings.HUB_NODE_SELECTOR,
        tolerations=settings.HUB_TOLERATIONS,
    )


def _hub_login_settings(preview: bool = False) -> IdentityProvider:
    """The portal's OIDC issuer for the hubs; an issuer that cannot be discovered is transient."""
    try:
        return oidc.hub_login_settings()
    except oidc.DiscoveryError as error:
        if preview:
            return oidc.hub_login_settings(unreachable=UNKNOWN_ENDPOINT)
        raise k8s.ClusterError(str(error), transient=True) from error


def hub_api_url(spec: HubSpec) -> str:
    """Where the portal reaches the hub's REST API (HUB_API_URL)."""
    return settings.HUB_API_URL.format(host=spec.host, namespace=spec.namespace).rstrip("/")


def hub_servers(spec: HubSpec) -> HubServers | None:
    """The hub's servers through its API, as the portal's service (the token is in the hub's
    Secret); None while the hub has no Secret."""
    secret = k8s.get(api_client(), "Secret", SECRET_NAME, spec.namespace)
    if secret is None:
        return None
    return HubServers(
        hub_api_url(spec),
        HubSecrets.from_secret(secret).portal_token,
        verify=settings.HUB_API_CA_BUNDLE or True,
        connect_to=settings.HUB_API_CONNECT_TO,
    )
