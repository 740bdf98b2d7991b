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

import html
import json
import os
import re
import sys

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

VALUES_FILE = os.environ.get("HUB_VALUES_FILE", "/usr/local/etc/jupyterhub/values.json")
with open(VALUES_FILE, encoding="utf-8") as values_file:
    values = json.load(values_file)


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
c.GenericOAuthenticator.username_claim = oauth["username_claim"]
c.GenericOAuthenticator.oauth_callback_url = oauth["callback_url"]
# Set on Authenticator so that they hold for whichever authenticator runs.
c.Authenticator.allowed_users = set(values["allowed_users"])
c.Authenticator.admin_users = set(values["admin_users"])

# --- Services: the idle culler and the portal ----------------------------------------------

c.JupyterHub.services = [
    {
        "name": values["culler_service_name"],
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--timeout={int(values['idle_timeout_minutes']) * 60}",
        ],
    },
    {
        "name": values["portal_service_name"],
        "api_token": environment("PORTAL_SERVICE_TOKEN"),
    },
]
c.JupyterHub.load_roles = [
    {
        "name": "idle-culler",
        "description": "Stop servers that have been idle for longer than the hub allows",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": [values["culler_service_name"]],
    },
    {
        "name": "hub-on-demand",
        "description": "The portal reads the hub's users and servers; it changes nothing",
        # list:users to list them at all (read:* only reads the users one names).
        "scopes": ["list:users", "read:users", "read:servers", "read:hub"],
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

# Kubernetes API access from user servers only with jobs access, and then only as "jobs".
if values["jobs_access"]:
    c.KubeSpawner.service_account = values["jobs_service_account"]
    c.KubeSpawner.automount_service_account_token = True
else:
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

c.KubeSpawner.profile_list = [
    {
        "slug": profile["slug"],
        "display_name": text(profile["display_name"]),
        "description": text(profile["description"]),
        "default": index == 0,
        "kubespawner_override": {
            "cpu_guarantee": profile["cpu_guarantee"],
            "cpu_limit": profile["cpu_limit"],
            "mem_guarantee": profile["mem_guarantee"],
            "mem_limit": profile["mem_limit"],
            **gpu_override,
        },
        "profile_options": profile_options,
    }
    for index, profile in enumerate(values["profiles"])
]
