"""The values a hub's JupyterHub reads at start-up, and the names both sides agree on.

A hub's ConfigMap holds two files: `in_hub_container/jupyterhub_config.py`, the same static
file for every hub (`CONFIG_FILE`; it runs inside the hub's container, not in the portal), and
`values.json`, this hub's data (`hub_values`). The config only
ever reads data from the JSON file, so nothing a requester typed becomes Python code.
Secrets are not values: the hub Deployment passes them as environment variables (`ENV_*`)
from the hub's Secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.spec import (
    DEFAULT_TIER,
    OWNERS_TIER,
    ExternalVolume,
    GpuRequest,
    HubSpec,
    ServerOption,
    TierSpec,
)

CONFIG_FILE = Path(__file__).resolve().parent / "in_hub_container" / "jupyterhub_config.py"

# Where the hub container finds its ConfigMap (both files) and keeps its state (the PVC).
CONFIG_MOUNT_PATH = "/usr/local/etc/jupyterhub"
CONFIG_FILE_KEY = "jupyterhub_config.py"
VALUES_FILE_KEY = "values.json"
VALUES_FILE_ENV = "HUB_VALUES_FILE"
HUB_STATE_MOUNT_PATH = "/srv/jupyterhub"
# Members and tiers live in their own ConfigMap, mounted as a directory (not subPath) so that
# the kubelet refreshes the file in place; the hub reads it at every login and spawn, and it
# is not part of the hub Deployment's config checksum: a change restarts nothing.
MEMBERS_CONFIG_MAP = "hub-members"
MEMBERS_FILE_KEY = "members.json"
MEMBERS_MOUNT_PATH = "/usr/local/etc/hub-members"
MEMBERS_FILE_ENV = "HUB_MEMBERS_FILE"

# Environment variables of the hub container, all from the hub's Secret.
ENV_COOKIE_SECRET = "JPY_COOKIE_SECRET"  # 32 random bytes, hex-encoded
ENV_PROXY_AUTH_TOKEN = "CONFIGPROXY_AUTH_TOKEN"  # shared with the proxy Deployment
ENV_CRYPT_KEY = "JUPYTERHUB_CRYPT_KEY"  # 32 random bytes, hex-encoded
ENV_OAUTH_CLIENT_SECRET = "OAUTH_CLIENT_SECRET"
ENV_PORTAL_SERVICE_TOKEN = "PORTAL_SERVICE_TOKEN"
SECRET_ENV_VARS = (
    ENV_COOKIE_SECRET,
    ENV_PROXY_AUTH_TOKEN,
    ENV_CRYPT_KEY,
    ENV_OAUTH_CLIENT_SECRET,
    ENV_PORTAL_SERVICE_TOKEN,
)

# Object names inside a hub's namespace.
HUB_DB_PVC = "hub-db"
SHARED_PVC = "shared"
EXTERNAL_PVC_PREFIX = "ext-"
# The `hub` Service, reached by user servers from the users' namespace.
HUB_URL_TEMPLATE = "http://hub.{namespace}:8081"
PROXY_API_URL = "http://proxy-api:8001"  # the `proxy-api` Service, next to the hub
# One home volume per user, shared by the user's named servers (KubeSpawner template).
HOME_PVC_TEMPLATE = "home-{username}"

# JupyterHub services (API clients of the hub).
PORTAL_SERVICE_NAME = "hub-on-demand"

# Where volumes appear in user servers (the Jupyter images' home directory).
HOME_MOUNT_PATH = "/home/jovyan"
SHARED_MOUNT_PATH = "/home/jovyan/shared"

# A hub without hardware options gets the quota's fallback (see render.quota_totals).
DEFAULT_OPTION = ServerOption("default", "Default", 0.5, 1.0, 1.0, 2.0)


@dataclass(frozen=True)
class HubOAuthClient:
    """How a hub's JupyterHub logs users in through the portal's OIDC issuer."""

    authorize_url: str
    token_url: str
    userdata_url: str
    client_id: str
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    username_claim: str = "preferred_username"
    # The userinfo claim that lists the user's IdP groups (for group grants).
    groups_claim: str = "groups"


def dns_label(text: str) -> str:
    """A DNS-1123 label made from catalogue text (lowercase, '-' for anything else)."""
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label[:63].rstrip("-") or "x"


def external_volume_name(volume_name: str) -> str:
    """Volume name in user pods of an external volume; for kind "pvc" also the PVC's name."""
    return dns_label(EXTERNAL_PVC_PREFIX + volume_name)


def kubespawner_memory(gib: float) -> str:
    """Memory in KubeSpawner's notation ('M' is MiB), matching the quota's Mi."""
    return f"{round(gib * 1024)}M"


def _describe(option: ServerOption, gpu: GpuRequest | None) -> str:
    text = (
        f"{option.cpu_limit:g} CPU ({option.cpu_guarantee:g} guaranteed), "
        f"{option.mem_limit_gib:g} GiB memory ({option.mem_guarantee_gib:g} GiB guaranteed)"
    )
    if gpu:
        text += f", {gpu.count} x {gpu.display_name or gpu.product} GPU"
    return text


NO_GPU_SUFFIX = "-no-gpu"


def _profile(option: ServerOption, gpu: GpuRequest | None, variant: bool = False) -> dict:
    slug = dns_label(option.name)
    return {
        "slug": dns_label(slug[: 63 - len(NO_GPU_SUFFIX)] + NO_GPU_SUFFIX) if variant else slug,
        "option": option.name,
        "display_name": f"{option.display_name} (no GPU)" if variant else option.display_name,
        "description": _describe(option, gpu),
        "gpu": gpu is not None,
        "cpu_guarantee": option.cpu_guarantee,
        "cpu_limit": option.cpu_limit,
        "mem_guarantee": kubespawner_memory(option.mem_guarantee_gib),
        "mem_limit": kubespawner_memory(option.mem_limit_gib),
    }


def _profiles(spec: HubSpec) -> list[dict[str, Any]]:
    """One profile per server option; with GPUs, each option also without a GPU, for tiers
    without GPU access (and for anyone who does not need one)."""
    options = spec.server_options or (DEFAULT_OPTION,)
    profiles = [_profile(option, spec.gpu) for option in options]
    if spec.gpu:
        profiles += [_profile(option, None, variant=True) for option in options]
    return profiles


def server_profiles(spec: HubSpec) -> list[dict[str, Any]]:
    """The hub's profiles as its config offers them: slug, option name, whether with a GPU."""
    return _profiles(spec)


def _images(spec: HubSpec) -> list[dict[str, Any]]:
    images = [
        {
            "slug": dns_label(image.name),
            "display_name": image.display_name,
            "image": image.reference,
            "default_url": image.default_url,
            "interface": image.interface,
        }
        for image in spec.images
    ]
    if spec.custom_image:
        taken = {image["slug"] for image in images}
        slug = next(s for s in ("custom", "custom-image", "custom-2", "custom-3") if s not in taken)
        images.append(
            {
                "slug": slug,
                "display_name": f"Custom image: {spec.custom_image}",
                "image": spec.custom_image,
                "default_url": "/lab",
                "interface": "jupyterlab",
            }
        )
    return images


def _external(volume: ExternalVolume) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": volume.name,
        "volume_name": external_volume_name(volume.name),
        "kind": volume.kind,
        "mount_path": volume.mount_path,
        "read_only": volume.read_only,
    }
    if volume.kind == "nfs":
        entry.update(server=volume.server, path=volume.path)
    elif volume.kind == "pvc":
        entry.update(pvc_name=external_volume_name(volume.name))
    else:
        raise ValueError(f"unknown external volume kind {volume.kind!r}")
    return entry


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def hub_values(
    spec: HubSpec, oauth: HubOAuthClient, placement: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The JSON-serialisable values `jupyterhub_config.py` configures this hub from.

    `placement` (RenderSettings.placement) puts user servers where the hub runs; it is left
    out when empty, so that hubs rendered without it keep their configuration byte for byte.
    """
    shared = None
    if spec.shared_mode in ("ro", "rw"):
        shared = {
            "pvc_name": SHARED_PVC,
            "mount_path": SHARED_MOUNT_PATH,
            "read_only": spec.shared_mode == "ro",
        }
    elif spec.shared_mode != "none":
        raise ValueError(f"unknown shared volume mode {spec.shared_mode!r}")
    gpu = None
    if spec.gpu:
        gpu = {
            "resource_name": spec.gpu.resource_name,
            "count": spec.gpu.count,
            "node_label_key": spec.gpu.node_label_key,
            "product": spec.gpu.product,
            "display_name": spec.gpu.display_name or spec.gpu.product,
            # GPU seats: the hub refuses a GPU server when its GPUs would exceed them.
            "max_gpus": spec.gpu_seats,
        }
    return {
        "hub_id": spec.hub_id,
        "slug": spec.slug,
        # Where KubeSpawner starts user servers: the users' namespace, never the hub's.
        "namespace": spec.users_namespace,
        "public_url": f"https://{spec.host}/",
        "hub_url": HUB_URL_TEMPLATE.format(namespace=spec.namespace),
        "proxy_api_url": PROXY_API_URL,
        "oauth": {
            "authorize_url": oauth.authorize_url,
            "token_url": oauth.token_url,
            "userdata_url": oauth.userdata_url,
            "client_id": oauth.client_id,
            "scopes": list(oauth.scopes),
            "username_claim": oauth.username_claim,
            "groups_claim": oauth.groups_claim,
            "callback_url": spec.login_callback_url,
        },
        "portal_service_name": PORTAL_SERVICE_NAME,
        "profiles": _profiles(spec),
        "gpu": gpu,
        "images": _images(spec),
        # Users may type an image of their own only where the hub's custom image was granted,
        # and only from the registries the policy allows.
        "custom_image_registries": list(spec.allowed_registries) if spec.custom_image else [],
        "home": {
            "pvc_name_template": HOME_PVC_TEMPLATE,
            "size": f"{spec.home_size_gib}Gi",
            "storage_class": "",
            "mount_path": HOME_MOUNT_PATH,
            "wipe_allowed": spec.wipe_home_allowed,
        },
        "shared": shared,
        "external_volumes": [_external(volume) for volume in spec.external_volumes],
        "notebooks_per_user": spec.notebooks_per_user,
        "jobs_access": spec.jobs_access,
        **({"placement": placement} if placement else {}),
    }


def _access(
    spec: HubSpec, tier: TierSpec, profiles: list[dict], images: list[dict]
) -> dict[str, Any]:
    """What one tier may use, in the names the hub's config knows (profile and image slugs)."""
    allowed_options = set(tier.server_options)
    allowed_images = {dns_label(name) for name in tier.images}
    return {
        "profiles": [
            p["slug"]
            for p in profiles
            if (not allowed_options or p["option"] in allowed_options)
            and (tier.gpu or not p["gpu"])
        ],
        # Listed images of the hub; with no selection also the custom image and, where the hub
        # has one, images of the user's own from the allowed registries.
        "images": [i["slug"] for i in images if not tier.images or i["slug"] in allowed_images],
        "custom_images": not tier.images and bool(spec.custom_image),
        "shared": tier.shared if spec.shared_mode != "none" else None,
        "jobs": spec.jobs_access and tier.jobs,
    }


def members_values(spec: HubSpec) -> dict[str, Any]:
    """The hub's members and tiers (`members.json` in the members ConfigMap), which the hub
    reads at every login and spawn: who may log in (users, IdP groups), who is admin, and
    which profiles, images, shared volume access and jobs role each user's tier gives."""
    admins = _unique([spec.owner, *spec.co_owners])
    profiles, images = _profiles(spec), _images(spec)
    tiers = list(spec.tiers) or [DEFAULT_TIER]
    default = next((t for t in tiers if t.default), tiers[0])
    known = {tier.name for tier in tiers}
    member_tiers = dict(spec.member_tiers)
    return {
        # The issuer's subject -> the hub username (the portal's account): a user renamed at
        # the provider stays the same hub user with the same home volume, and nobody becomes
        # a member by taking a member's name (at the issuer or at another provider). Naming is
        # not admission: people of granted groups are listed too, and get in only when the
        # hub's login finds the group in the provider's claims.
        "identities": dict(sorted(spec.identities)),
        "admin_users": admins,
        "allowed_users": _unique([*admins, *spec.members]),
        "admin_groups": sorted({g.group for g in spec.group_grants if g.role == "co-owner"}),
        "allowed_groups": sorted({g.group for g in spec.group_grants}),
        "default_tier": default.name,
        "tiers": {tier.name: _access(spec, tier, profiles, images) for tier in tiers},
        # Owner and co-owners (also through a group): everything, the shared volume writable.
        "owner_access": _access(spec, OWNERS_TIER, profiles, images),
        "user_tiers": {
            name: tier if tier in known else default.name
            for name, tier in sorted((m, member_tiers.get(m, default.name)) for m in spec.members)
            if name not in admins
        },
        # Users with Jobs: the ServiceAccount their server runs as and their jobs namespace.
        "jobs": {
            user: {"account": spec.jobs_account(user), "namespace": spec.jobs_namespace(user)}
            for user in spec.jobs_users
        },
        "group_tiers": {
            g.group: g.tier if g.tier in known else default.name
            for g in spec.group_grants
            if g.role != "co-owner"
        },
    }
