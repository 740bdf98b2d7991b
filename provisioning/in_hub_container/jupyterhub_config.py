# JupyterHub configuration of every hub that Hub on Demand provisions.
#
# This file is the same for all hubs and is shipped unchanged in each hub's ConfigMap. What
# differs between hubs is data: it is read from a JSON file (written by
# provisioning.hubconfig.hub_values) and only ever used as values, never as code. Secrets come
# from the hub's environment (the hub's Secret), never from the JSON file.
#
# The hub runs in its own namespace next to a separately deployed configurable-http-proxy; user
# servers are started by KubeSpawner in the same namespace, within its ResourceQuota and under
# Pod Security "baseline" (the user pods also satisfy "restricted").

import copy
import html
import json
import os
import re

from jupyterhub.utils import maybe_future
from oauthenticator.generic import GenericOAuthenticator
from tornado import web

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

VALUES_FILE = os.environ.get("HUB_VALUES_FILE", "/usr/local/etc/jupyterhub/values.json")
with open(VALUES_FILE, encoding="utf-8") as values_file:
    values = json.load(values_file)

# Members and tiers (provisioning.hubconfig.members_values) come from their own ConfigMap,
# which the kubelet refreshes in place: they are read again whenever the file changes, at
# each login and spawn, so a change of membership restarts neither the hub nor any server.
MEMBERS_FILE = os.environ.get("HUB_MEMBERS_FILE", "/usr/local/etc/hub-members/members.json")
_members = {"stamp": None, "value": None}


def members():
    """The current members file; the last good one while a new one is unreadable."""
    try:
        stat = os.stat(MEMBERS_FILE)
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != _members["stamp"]:
            with open(MEMBERS_FILE, encoding="utf-8") as members_file:
                _members["value"] = json.load(members_file)
            _members["stamp"] = stamp
    except (OSError, ValueError):
        if _members["value"] is None:
            raise
    return _members["value"]


members()  # the hub must not start without it


def environment(name):
    """A secret from the hub's environment; the hub must not start without it."""
    value = os.environ.get(name, "")
    if not value:
        raise RuntimeError(f"{name} is not set; the hub Deployment passes it from its Secret")
    return value


def text(value):
    """Text shown on the spawn form. KubeSpawner renders its form without autoescaping, so
    names from the catalogues are escaped here."""
    return html.escape(value)


def literal(value):
    """Text that KubeSpawner and JupyterHub pass through str.format (volumes, mounts, URLs)
    stays as written: braces are doubled so that they cannot act as template fields."""
    return value.replace("{", "{{").replace("}", "}}")


# --- JupyterHub inside the namespace --------------------------------------------------------

c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
c.JupyterHub.hub_connect_url = values["hub_url"]
c.JupyterHub.public_url = values["public_url"]
# The proxy is its own Deployment, reached through the proxy-api Service.
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = values["proxy_api_url"]
c.ConfigurableHTTPProxy.auth_token = environment("CONFIGPROXY_AUTH_TOKEN")
c.JupyterHub.cookie_secret = bytes.fromhex(environment("JPY_COOKIE_SECRET"))
# OAuth tokens are kept in encrypted auth state; CryptKeeper reads JUPYTERHUB_CRYPT_KEY itself.
environment("JUPYTERHUB_CRYPT_KEY")
c.Authenticator.enable_auth_state = True
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
# User servers outlive a restart of the hub (an update of its config, a rescheduled pod).
c.JupyterHub.cleanup_servers = False

# --- Login: the portal's OIDC issuer, limited to the hub's owner and collaborators ----------

oauth = values["oauth"]
c.JupyterHub.authenticator_class = "oauthenticator.generic.GenericOAuthenticator"
c.GenericOAuthenticator.login_service = "Hub on Demand"
c.GenericOAuthenticator.authorize_url = oauth["authorize_url"]
c.GenericOAuthenticator.token_url = oauth["token_url"]
c.GenericOAuthenticator.userdata_url = oauth["userdata_url"]
c.GenericOAuthenticator.client_id = oauth["client_id"]
c.GenericOAuthenticator.client_secret = environment("OAUTH_CLIENT_SECRET")
c.GenericOAuthenticator.scope = list(oauth["scopes"])
# A hub user is named by the portal's account of their subject at the issuer (the members
# file's "identities", HubAuthenticator.user_info_to_username), never by a name claim.
c.GenericOAuthenticator.username_claim = "sub"
c.GenericOAuthenticator.oauth_callback_url = oauth["callback_url"]
# IdP groups: the userinfo claim that lists them; granted groups may log in, groups granted
# co-owner are admins.
c.GenericOAuthenticator.manage_groups = True
groups_claim = oauth.get("groups_claim", "groups")
c.GenericOAuthenticator.auth_state_groups_key = f"oauth_user.{groups_claim}"
c.GenericOAuthenticator.allowed_groups = set(members()["allowed_groups"])
c.GenericOAuthenticator.admin_groups = set(members()["admin_groups"])
# Set on Authenticator so that they hold for whichever authenticator runs.
c.Authenticator.allowed_users = set(members()["allowed_users"])
c.Authenticator.admin_users = set(members()["admin_users"])
# Only current members: a removed member must not stay allowed because the hub knows them.
c.Authenticator.allow_existing_users = False


class MembersFromFile:
    """Takes allowed and admin users and groups from the members file at every login and
    refresh, so that membership changes apply without a restart."""

    def load_members(self):
        current = members()
        self.allowed_users = set(current["allowed_users"])
        self.admin_users = set(current["admin_users"])
        if self.has_trait("allowed_groups") and self.manage_groups:
            self.allowed_groups = set(current["allowed_groups"])
            self.admin_groups = set(current["admin_groups"])

    def is_member(self, name, groups):
        current = members()
        return (
            name in current["allowed_users"]
            or name in current["admin_users"]
            or bool(set(groups) & set(current["allowed_groups"]))
        )

    def with_admin(self, model, groups):
        """Admin exactly when owner or co-owner now: a demoted co-owner loses it (an auth
        model's admin None would leave the hub's record unchanged)."""
        if isinstance(model, str):
            model = {"name": model}
        if isinstance(model, dict) and model.get("name"):
            current = members()
            groups = model.get("groups", groups) or []
            model["admin"] = model["name"] in current["admin_users"] or bool(
                set(groups) & set(current["admin_groups"])
            )
        return model

    def user_info_to_username(self, user_info):
        """The portal's username for the user's subject: renamed at the provider, a user
        stays the same hub user; a subject the portal did not make a member is refused."""
        subject = user_info.get("sub")
        name = members().get("identities", {}).get(str(subject)) if subject else None
        if not name:
            raise web.HTTPError(403, "You are not a member of this hub. Ask its owner.")
        return name

    async def authenticate(self, handler, data=None):
        self.load_members()
        return self.with_admin(await maybe_future(super().authenticate(handler, data)), [])

    async def refresh_user(self, user, handler=None):
        # A removed member's session ends at the next refresh (auth_refresh_age).
        self.load_members()
        groups = [group.name for group in user.groups]
        if not self.is_member(user.name, groups):
            return False
        return self.with_admin(await maybe_future(super().refresh_user(user, handler)), groups)


class HubAuthenticator(MembersFromFile, GenericOAuthenticator):
    """The portal's OIDC login, limited to the hub's current members."""

    members_mixin = MembersFromFile


c.JupyterHub.authenticator_class = HubAuthenticator

# --- Services: the portal ------------------------------------------------------------------

# No idle culler runs in the hub: the portal applies each server option's idle and age limits
# through this API (it warns users first, and counts what it stops).
c.JupyterHub.services = [
    {
        "name": values["portal_service_name"],
        "api_token": environment("PORTAL_SERVICE_TOKEN"),
    },
]
c.JupyterHub.load_roles = [
    {
        "name": "server-policy",
        "description": (
            "The portal stops servers that idled or ran longer than their server option "
            "allows, and records a user's 'keep running' as activity"
        ),
        "scopes": ["list:users", "read:servers", "delete:servers", "users:activity"],
        "services": [values["portal_service_name"]],
    },
    {
        "name": "hub-on-demand",
        "description": (
            "The portal lists the hub's users with their groups and deletes users who are no "
            "longer members (their servers stop, their sessions and tokens end)"
        ),
        # Exactly what provisioning.hubapi calls: GET /users (names and groups, to compare
        # with the members file) and DELETE /users/{name}. Never admin:users, which includes
        # admin:auth_state, every user's stored provider tokens.
        "scopes": ["list:users", "read:users:groups", "delete:users"],
        "services": [values["portal_service_name"]],
    },
]

# --- Named servers ---------------------------------------------------------------------------

# notebooks_per_user counts every server of a user: the default one plus the named ones.
if values["notebooks_per_user"] > 1:
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.named_server_limit_per_user = values["notebooks_per_user"] - 1
else:
    c.JupyterHub.allow_named_servers = False

# --- User servers: KubeSpawner in the hub's namespace ----------------------------------------

c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.namespace = values["namespace"]
c.KubeSpawner.start_timeout = 600  # big images on a node that has not pulled them yet
c.KubeSpawner.http_timeout = 120
c.KubeSpawner.image = values["images"][0]["image"] if values["images"] else ""
c.KubeSpawner.default_url = "/lab"
# Installation-wide placement (RenderSettings.node_selector and tolerations), if any.
placement = values.get("placement") or {}
c.KubeSpawner.node_selector = placement.get("nodeSelector", {})
c.KubeSpawner.tolerations = placement.get("tolerations", [])

# Security context: Pod Security "restricted" passes, so "baseline" certainly does.
c.KubeSpawner.uid = 1000
c.KubeSpawner.gid = 100
c.KubeSpawner.fs_gid = 100
c.KubeSpawner.privileged = False
c.KubeSpawner.allow_privilege_escalation = False
c.KubeSpawner.pod_security_context = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 100,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
c.KubeSpawner.container_security_context = CONTAINER_SECURITY_CONTEXT

# Kubernetes API access from user servers only with jobs access and a tier with the jobs
# role, and then only as the user's own jobs ServiceAccount (set per spawn in apply_tier).
c.KubeSpawner.automount_service_account_token = False

# Storage. Volumes, mounts and init containers are dictionaries so that profile overrides
# add to them instead of replacing them.
home = values["home"]
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.pvc_name_template = home["pvc_name_template"]
c.KubeSpawner.storage_capacity = home["size"]
if home["storage_class"]:
    c.KubeSpawner.storage_class = home["storage_class"]
# Keep a user's home when the user is removed from the hub; it goes with the namespace.
c.KubeSpawner.delete_pvc = False
volumes = {"home": {"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}}
mounts = {"home": {"name": "home", "mountPath": literal(home["mount_path"])}}
shared = values["shared"]
if shared:
    volumes["shared"] = {
        "name": "shared",
        "persistentVolumeClaim": {
            "claimName": literal(shared["pvc_name"]),
            "readOnly": shared["read_only"],
        },
    }
    mounts["shared"] = {
        "name": "shared",
        "mountPath": literal(shared["mount_path"]),
        "readOnly": shared["read_only"],
    }
for external in values["external_volumes"]:
    name = external["volume_name"]
    if external["kind"] == "nfs":
        source = {
            "nfs": {
                "server": literal(external["server"]),
                "path": literal(external["path"]),
                "readOnly": external["read_only"],
            }
        }
    else:
        source = {
            "persistentVolumeClaim": {
                "claimName": literal(external["pvc_name"]),
                "readOnly": external["read_only"],
            }
        }
    volumes[name] = {"name": name, **source}
    mounts[name] = {
        "name": name,
        "mountPath": literal(external["mount_path"]),
        "readOnly": external["read_only"],
    }
c.KubeSpawner.volumes = volumes
c.KubeSpawner.volume_mounts = mounts
c.KubeSpawner.init_containers = {}


def access_of(spawner):
    """What the spawner's user may use now: everything for owner, co-owners and admins, else
    the tier of the user, of their first granted IdP group (by name), or the default tier."""
    current = members()
    user = spawner.user
    groups = {group.name for group in user.groups}
    admin = user.name in current["admin_users"] or groups & set(current["admin_groups"])
    if admin or user.admin:
        return current["owner_access"]
    tier = current["user_tiers"].get(user.name)
    if tier is None:
        granted = sorted(groups & set(current["group_tiers"]))
        tier = current["group_tiers"][granted[0]] if granted else current["default_tier"]
    return current["tiers"].get(tier) or current["tiers"][current["default_tier"]]


def apply_tier(spawner):
    """Before each spawn: the shared volume read-only or read-write, and the jobs role, as
    the user's tier says; a tier that allows no server option or image starts nothing."""
    access = access_of(spawner)
    if not access["profiles"] or not (access["images"] or access["custom_images"]):
        raise web.HTTPError(403, "Your tier on this hub allows no server; ask the hub's owner.")
    tier_volumes, tier_mounts = copy.deepcopy(volumes), copy.deepcopy(mounts)
    if "shared" in tier_volumes:
        if access["shared"] in ("ro", "rw"):
            read_only = access["shared"] == "ro"
            tier_volumes["shared"]["persistentVolumeClaim"]["readOnly"] = read_only
            tier_mounts["shared"]["readOnly"] = read_only
        else:
            del tier_volumes["shared"], tier_mounts["shared"]
    spawner.volumes, spawner.volume_mounts = tier_volumes, tier_mounts
    # Profile options merge into these dictionaries: start each spawn from the base again.
    spawner.init_containers = {}
    jobs = members().get("jobs", {}).get(spawner.user.name)
    environment = {k: v for k, v in spawner.environment.items() if k != "JOBS_NAMESPACE"}
    if values["jobs_access"] and access["jobs"] and jobs:
        # The user's own ServiceAccount: it manages Jobs in the user's jobs namespace only.
        spawner.service_account = jobs["account"]
        spawner.automount_service_account_token = True
        environment["JOBS_NAMESPACE"] = jobs["namespace"]
    else:
        spawner.service_account = None
        spawner.automount_service_account_token = False
    spawner.environment = environment


c.KubeSpawner.pre_spawn_hook = apply_tier


def wipe_home_init_container(spawner):
    """An init container that empties the home volume before the server starts.

    It runs the server's own image (already chosen when this is called, as the image option
    comes first) with the server's resources, so the pod needs nothing more from the quota.
    """
    resources = {
        "requests": {"cpu": str(spawner.cpu_guarantee), "memory": str(spawner.mem_guarantee)},
        "limits": {"cpu": str(spawner.cpu_limit), "memory": str(spawner.mem_limit)},
    }
    return {
        "wipe-home": {
            "name": "wipe-home",
            "image": spawner.image,
            "command": ["find", "/wipe/home", "-mindepth", "1", "-delete"],
            "volumeMounts": [{"name": "home", "mountPath": "/wipe/home"}],
            "resources": resources,
            "securityContext": CONTAINER_SECURITY_CONTEXT,
        }
    }


# --- Profiles: the hub's server options x its images ---------------------------------------

image_option = {
    "display_name": "Image",
    "choices": {
        image["slug"]: {
            "display_name": text(image["display_name"]),
            "kubespawner_override": {
                "image": image["image"],
                "default_url": literal(image["default_url"]),
            },
        }
        for image in values["images"]
    },
}
registries = values["custom_image_registries"]
if registries:
    # Only references that name one of the allowed registries pass: the registry must be
    # followed by "/", so "quay.io.evil.com/x" is refused when "quay.io" is allowed.
    # "$(?!\n)" ends the match at the real end of the input ("$" alone accepts a final "\n").
    # The browser checks the same pattern (with the "v" flag, where "\-" outside a class is
    # an error); a "-" in a host name is literal anyway.
    registry = "|".join(re.escape(name).replace(r"\-", "-") for name in registries)
    component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    image_option["unlisted_choice"] = {
        "enabled": True,
        "display_name": "Image reference",
        "display_name_in_choices": "Another image...",
        "validation_regex": (
            rf"^(?:{registry})/{component}(?:/{component})*"
            r"(?::[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127})?(?:@sha256:[a-f0-9]{64})?$(?!\n)"
        ),
        "validation_message": text(
            f"An image from {' or '.join(registries)}, as registry/name:tag"
        ),
        "kubespawner_override": {"image": "{value}", "default_url": "/lab"},
    }

profile_options = {"image": image_option}
if home["wipe_allowed"]:
    profile_options["wipe_home"] = {
        "display_name": "Wipe my home directory on start",
        "choices": {
            "keep": {"display_name": "No, keep my files", "default": True},
            "wipe": {
                "display_name": "Yes, delete everything in my home directory",
                "kubespawner_override": {"init_containers": wipe_home_init_container},
            },
        },
    }

gpu = values["gpu"]
gpu_override = {}
if gpu:
    count = str(gpu["count"])
    gpu_override = {
        "extra_resource_guarantees": {gpu["resource_name"]: count},
        "extra_resource_limits": {gpu["resource_name"]: count},
        "node_selector": {gpu["node_label_key"]: gpu["product"]},
        "tolerations": {
            "gpu": {"key": gpu["resource_name"], "operator": "Exists", "effect": "NoSchedule"}
        },
    }

PROFILES = [
    {
        "slug": profile["slug"],
        "display_name": text(profile["display_name"]),
        "description": text(profile["description"]),
        "kubespawner_override": {
            "cpu_guarantee": profile["cpu_guarantee"],
            "cpu_limit": profile["cpu_limit"],
            "mem_guarantee": profile["mem_guarantee"],
            "mem_limit": profile["mem_limit"],
            **(gpu_override if profile.get("gpu") else {}),
        },
        "profile_options": profile_options,
    }
    for profile in values["profiles"]
]


def profiles_for(spawner):
    """The hub's profiles that the user's tier allows, with the images it allows; KubeSpawner
    calls this for the spawn form and again at start, so a choice outside the tier fails."""
    access = access_of(spawner)
    allowed_images = set(access["images"])
    result = []
    for profile in PROFILES:
        if profile["slug"] not in access["profiles"]:
            continue
        profile = copy.deepcopy(profile)
        image = profile["profile_options"]["image"]
        image["choices"] = {
            slug: choice for slug, choice in image["choices"].items() if slug in allowed_images
        }
        if not access["custom_images"]:
            image.pop("unlisted_choice", None)
        profile["default"] = not result
        result.append(profile)
    return result


c.KubeSpawner.profile_list = profiles_for


# --- GPU seats: the hub's users hold at most values["gpu"]["max_gpus"] GPUs at once ---------

GPU_PROFILES = {profile["slug"] for profile in values["profiles"] if profile.get("gpu")}


def chosen_profile(spawner):
    """The profile a spawn starts: the one asked for, else KubeSpawner's default (the first
    the user's tier allows)."""
    slug = (getattr(spawner, "user_options", None) or {}).get("profile")
    if slug:
        return slug
    offered = profiles_for(spawner)
    return offered[0]["slug"] if offered else None


def gpus_held(spawner):
    """GPUs of a server that is starting, running or stopping (its pod may hold them)."""
    if not spawner.active or chosen_profile(spawner) not in GPU_PROFILES:
        return 0
    return int(gpu["count"])


class GpuSeatsTaken(web.HTTPError):
    """Every GPU seat of the hub is held; shown on the spawn page as it is."""

    def __init__(self, message):
        super().__init__(409, message)
        self.jupyterhub_message = message


def hold_gpu_seat(spawner):
    """Refuse a GPU server when its GPUs and those of the hub's other starting, running or
    stopping servers would exceed the hub's GPU seats. The hub runs in one process and this
    check does not wait on anything, so two spawns cannot both take the last seat."""
    if not gpu or chosen_profile(spawner) not in GPU_PROFILES:
        return
    seats, wanted = int(gpu.get("max_gpus") or 0), int(gpu["count"])
    if not seats:
        return
    held = sum(
        gpus_held(other)
        for user in getattr(spawner.user, "settings", {}).get("users", {}).values()
        for other in user.spawners.values()
        if other is not spawner
    )
    if held + wanted > seats:
        raise GpuSeatsTaken(
            f"All {seats} GPU seats of this hub are taken ({held} GPUs are held by other "
            f"servers, this server needs {wanted}). Start a server without a GPU, or try "
            "again when a GPU server stops."
        )


def before_spawn(spawner):
    """The pre-spawn hook: the user's tier, then the hub's GPU seats."""
    apply_tier(spawner)
    hold_gpu_seat(spawner)


c.KubeSpawner.pre_spawn_hook = before_spawn
