"""The static `jupyterhub_config.py`, loaded the way JupyterHub loads it, for several hubs.

Each test writes a hub's values (`hub_values`) to a file, points HUB_VALUES_FILE at it and
loads the config with traitlets' own Python-file loader into a `Config`; the assertions are
on what JupyterHub and KubeSpawner would receive. tests/cluster/test_jupyterhub.py runs the
same file in a real JupyterHub against the local cluster.
"""

from __future__ import annotations

import html
import json
import re
from types import SimpleNamespace

import pytest
from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from provisioning import hubconfig
from provisioning.hubconfig import CONFIG_FILE, HubOAuthClient, hub_values, members_values
from provisioning.spec import (
    ExternalVolume,
    GpuRequest,
    GroupGrantSpec,
    HubSpec,
    ImageChoice,
    ServerOption,
    TierSpec,
)

OAUTH = HubOAuthClient(
    authorize_url="https://sso.uni.example/authorize",
    token_url="https://sso.uni.example/token",
    userdata_url="https://sso.uni.example/userinfo",
    client_id="hub-astro-101",
    scopes=("openid", "profile", "email"),
    username_claim="preferred_username",
)
SECRETS = {
    "CONFIGPROXY_AUTH_TOKEN": "proxy-token",
    "JPY_COOKIE_SECRET": "ab" * 32,
    "JUPYTERHUB_CRYPT_KEY": "cd" * 32,
    "OAUTH_CLIENT_SECRET": "oauth-secret",
    "PORTAL_SERVICE_TOKEN": "portal-token",
}
SMALL = ServerOption("small", "Small", 0.5, 1, 1, 2)
LARGE = ServerOption("large", "Large", 2, 4, 8, 16)
LAB = ImageChoice("scipy", "SciPy", "quay.io/jupyter/scipy-notebook:2025-01-06")
RSTUDIO = ImageChoice(
    "rstudio", "RStudio", "ghcr.io/rocker/binder:4.4", interface="rstudio", default_url="/rstudio"
)
A100 = GpuRequest("nvidia.com/gpu", "NVIDIA-A100-SXM4-80GB", 2, display_name="NVIDIA A100")


def course(**overrides) -> HubSpec:
    """A CPU-only course: two sizes, two images, a read-only shared volume and NFS data."""
    values = dict(
        hub_id=7,
        slug="astro-101",
        owner="ada@uni.example",
        hubs_domain="hubs.example.org",
        expected_users=40,
        server_options=(SMALL, LARGE),
        images=(LAB, RSTUDIO),
        home_size_gib=5,
        shared_size_gib=100,
        shared_mode="ro",
        external_volumes=(
            ExternalVolume(
                "survey", "nfs", "/mnt/survey", True, server="nfs.uni.example", path="/x/survey"
            ),
        ),
        idle_timeout_minutes=30,
        co_owners=("grace@uni.example",),
        members=("alan@uni.example", "ada@uni.example"),
    )
    values.update(overrides)
    return HubSpec(**values)


def research_group(**overrides) -> HubSpec:
    """GPUs, jobs access, several servers each, a writable shared volume, wiping allowed."""
    values = dict(
        hub_id=8,
        slug="ml-lab",
        owner="ada@uni.example",
        hubs_domain="hubs.example.org",
        expected_users=4,
        notebooks_per_user=3,
        server_options=(LARGE,),
        gpu=A100,
        images=(LAB,),
        home_size_gib=50,
        wipe_home_allowed=True,
        shared_size_gib=500,
        shared_mode="rw",
        external_volumes=(ExternalVolume("Scratch_Data", "pvc", "/mnt/scratch", False),),
        idle_timeout_minutes=240,
        jobs_access=True,
    )
    values.update(overrides)
    return HubSpec(**values)


def load(tmp_path, monkeypatch, values: dict, members: dict | None = None) -> Config:
    """Load the static config file for these values, as JupyterHub's `--config` does."""
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values, indent=2, sort_keys=True))
    monkeypatch.setenv("HUB_VALUES_FILE", str(values_file))
    members_file = tmp_path / "members.json"
    members_file.write_text(json.dumps(members or members_values(course()), sort_keys=True))
    monkeypatch.setenv("HUB_MEMBERS_FILE", str(members_file))
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return PyFileConfigLoader(CONFIG_FILE.name, str(CONFIG_FILE.parent)).load_config()


@pytest.fixture
def config_for(tmp_path, monkeypatch):
    return lambda spec: load(tmp_path, monkeypatch, hub_values(spec, OAUTH), members_values(spec))


def spawner(name: str = "ada@uni.example", groups: tuple[str, ...] = (), admin: bool = False):
    """What the config's callables read of a KubeSpawner: its user, their groups, admin."""
    user = SimpleNamespace(name=name, groups=[SimpleNamespace(name=g) for g in groups], admin=admin)
    return SimpleNamespace(user=user, environment={})


def profiles(c: Config, user=None) -> dict[str, dict]:
    """The profiles the config offers a user (the owner unless given)."""
    return {profile["slug"]: profile for profile in c.KubeSpawner.profile_list(user or spawner())}


def test_values_are_plain_json():
    values = hub_values(research_group(), OAUTH)
    assert json.loads(json.dumps(values)) == values


def test_hub_runs_in_its_namespace_and_starts_user_servers_in_the_users_namespace(config_for):
    c = config_for(course())

    assert c.JupyterHub.hub_bind_url == "http://0.0.0.0:8081"
    # User servers reach the hub's Service across namespaces.
    assert c.JupyterHub.hub_connect_url == "http://hub.hub-astro-101:8081"
    assert c.JupyterHub.public_url == "https://astro-101.hubs.example.org/"
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.ConfigurableHTTPProxy.api_url == "http://proxy-api:8001"
    assert c.ConfigurableHTTPProxy.auth_token == "proxy-token"
    assert c.JupyterHub.cookie_secret == bytes.fromhex("ab" * 32)
    assert c.Authenticator.enable_auth_state is True
    assert c.JupyterHub.db_url == "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
    assert c.JupyterHub.spawner_class == "kubespawner.KubeSpawner"
    assert c.KubeSpawner.namespace == "hub-astro-101-users"


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_hub_refuses_to_start_without_a_secret(tmp_path, monkeypatch, missing):
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(hub_values(course(), OAUTH)))
    monkeypatch.setenv("HUB_VALUES_FILE", str(values_file))
    members_file = tmp_path / "members.json"
    members_file.write_text(json.dumps(members_values(course())))
    monkeypatch.setenv("HUB_MEMBERS_FILE", str(members_file))
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(missing)

    with pytest.raises(RuntimeError, match=missing):
        PyFileConfigLoader(CONFIG_FILE.name, str(CONFIG_FILE.parent)).load_config()


def test_login_through_the_portal_issuer_limited_to_owner_and_collaborators(config_for):
    c = config_for(course())

    assert issubclass(c.JupyterHub.authenticator_class, GenericOAuthenticator)
    oauth = c.GenericOAuthenticator
    assert oauth.authorize_url == "https://sso.uni.example/authorize"
    assert oauth.token_url == "https://sso.uni.example/token"
    assert oauth.userdata_url == "https://sso.uni.example/userinfo"
    assert oauth.client_id == "hub-astro-101"
    assert oauth.client_secret == "oauth-secret"
    assert oauth.scope == ["openid", "profile", "email"]
    # Users are named by their subject's portal account (the members file's identities).
    assert oauth.username_claim == "sub"
    assert oauth.oauth_callback_url == "https://astro-101.hubs.example.org/hub/oauth_callback"
    assert c.Authenticator.admin_users == {"ada@uni.example", "grace@uni.example"}
    assert c.Authenticator.allowed_users == {
        "ada@uni.example",
        "grace@uni.example",
        "alan@uni.example",
    }


def test_no_culler_runs_in_the_hub_and_the_portal_may_stop_servers(config_for):
    """The portal is the one stopper (portal/hubs/server_policy.py): the hub runs no idle
    culler, and the portal's service may list servers, stop them and record activity."""
    c = config_for(course(idle_timeout_minutes=45))

    services = {service["name"]: service for service in c.JupyterHub.services}
    assert set(services) == {"hub-on-demand"}
    assert "command" not in services["hub-on-demand"]
    assert services["hub-on-demand"]["api_token"] == "portal-token"
    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert roles["server-policy"]["services"] == ["hub-on-demand"]
    assert set(roles["server-policy"]["scopes"]) == {
        "list:users",
        "read:servers",
        "delete:servers",
        "users:activity",
    }
    assert roles["hub-on-demand"]["services"] == ["hub-on-demand"]
    # What provisioning.hubapi calls, never admin:users (it reads every user's auth state).
    assert set(roles["hub-on-demand"]["scopes"]) == {
        "list:users",
        "read:users:groups",
        "delete:users",
    }


def test_cpu_course_profiles(config_for):
    c = config_for(course())

    by_slug = profiles(c)
    assert list(by_slug) == ["small", "large"]
    assert by_slug["small"]["default"] is True and by_slug["large"]["default"] is False
    assert by_slug["large"]["display_name"] == "Large"
    assert by_slug["large"]["description"] == (
        "4 CPU (2 guaranteed), 16 GiB memory (8 GiB guaranteed)"
    )
    assert by_slug["small"]["kubespawner_override"] == {
        "cpu_guarantee": 0.5,
        "cpu_limit": 1.0,
        "mem_guarantee": "1024M",
        "mem_limit": "2048M",
    }
    images = by_slug["small"]["profile_options"]["image"]
    assert images["choices"] == {
        "scipy": {
            "display_name": "SciPy",
            "kubespawner_override": {
                "image": "quay.io/jupyter/scipy-notebook:2025-01-06",
                "default_url": "/lab",
            },
        },
        "rstudio": {
            "display_name": "RStudio",
            "kubespawner_override": {
                "image": "ghcr.io/rocker/binder:4.4",
                "default_url": "/rstudio",
            },
        },
    }
    # No custom image granted: users cannot type one.
    assert "unlisted_choice" not in images
    assert "wipe_home" not in by_slug["small"]["profile_options"]


def test_gpu_profiles_request_gpus_on_matching_nodes(config_for):
    c = config_for(research_group())

    override = profiles(c)["large"]["kubespawner_override"]
    assert override["extra_resource_limits"] == {"nvidia.com/gpu": "2"}
    assert override["extra_resource_guarantees"] == {"nvidia.com/gpu": "2"}
    assert override["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert list(override["tolerations"].values()) == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert profiles(c)["large"]["description"].endswith(", 2 x NVIDIA A100 GPU")


def test_cpu_profiles_have_no_gpu_settings(config_for):
    override = profiles(config_for(course()))["small"]["kubespawner_override"]
    assert not {"extra_resource_limits", "node_selector", "tolerations"} & set(override)


def test_home_shared_and_external_volumes(config_for):
    c = config_for(course())

    assert c.KubeSpawner.storage_pvc_ensure is True
    assert c.KubeSpawner.pvc_name_template == "home-{username}"
    assert c.KubeSpawner.storage_capacity == "5Gi"
    assert "storage_class" not in c.KubeSpawner  # the cluster's default class
    assert c.KubeSpawner.volumes == {
        "home": {"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}},
        "shared": {
            "name": "shared",
            "persistentVolumeClaim": {"claimName": "shared", "readOnly": True},
        },
        "ext-survey": {
            "name": "ext-survey",
            "nfs": {"server": "nfs.uni.example", "path": "/x/survey", "readOnly": True},
        },
    }
    assert c.KubeSpawner.volume_mounts == {
        "home": {"name": "home", "mountPath": "/home/jovyan"},
        "shared": {"name": "shared", "mountPath": "/home/jovyan/shared", "readOnly": True},
        "ext-survey": {"name": "ext-survey", "mountPath": "/mnt/survey", "readOnly": True},
    }


def test_writable_shared_volume_and_external_pvc(config_for):
    c = config_for(research_group())

    assert c.KubeSpawner.volumes["shared"]["persistentVolumeClaim"]["readOnly"] is False
    assert c.KubeSpawner.volume_mounts["shared"]["readOnly"] is False
    # Catalogue names become DNS labels; the PVC is the one provisioning creates.
    assert c.KubeSpawner.volumes["ext-scratch-data"] == {
        "name": "ext-scratch-data",
        "persistentVolumeClaim": {"claimName": "ext-scratch-data", "readOnly": False},
    }
    assert hubconfig.external_volume_name("Scratch_Data") == "ext-scratch-data"
    assert c.KubeSpawner.volume_mounts["ext-scratch-data"]["readOnly"] is False


def test_no_shared_volume_when_none_requested(config_for):
    c = config_for(course(shared_mode="none", shared_size_gib=0, external_volumes=()))
    assert set(c.KubeSpawner.volumes) == {"home"}
    assert set(c.KubeSpawner.volume_mounts) == {"home"}


def test_wipe_home_option_adds_an_init_container(config_for):
    c = config_for(research_group())

    option = profiles(c)["large"]["profile_options"]["wipe_home"]
    assert option["display_name"] == "Wipe my home directory on start"
    assert option["choices"]["keep"]["default"] is True
    assert "kubespawner_override" not in option["choices"]["keep"]
    make_init_containers = option["choices"]["wipe"]["kubespawner_override"]["init_containers"]
    # KubeSpawner calls it with the spawner after the profile and the image were applied.
    spawner = SimpleNamespace(
        image="quay.io/jupyter/scipy-notebook:2025-01-06",
        cpu_guarantee=2.0,
        cpu_limit=4.0,
        mem_guarantee=8 * 2**30,
        mem_limit=16 * 2**30,
    )
    (wipe,) = make_init_containers(spawner).values()
    assert wipe["image"] == spawner.image
    assert wipe["command"] == ["find", "/wipe/home", "-mindepth", "1", "-delete"]
    assert wipe["volumeMounts"] == [{"name": "home", "mountPath": "/wipe/home"}]
    assert wipe["resources"] == {
        "requests": {"cpu": "2.0", "memory": str(8 * 2**30)},
        "limits": {"cpu": "4.0", "memory": str(16 * 2**30)},
    }
    assert wipe["securityContext"]["runAsNonRoot"] is True
    assert wipe["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The image option comes first, so the init container sees the chosen image.
    assert list(profiles(c)["large"]["profile_options"]) == ["image", "wipe_home"]


def spawn_settings(c: Config, user) -> SimpleNamespace:
    """Run the config's pre-spawn hook for a user: what their server gets."""
    c.KubeSpawner.pre_spawn_hook(user)
    return user


@pytest.mark.parametrize("jobs_access", [True, False])
def test_only_users_with_jobs_get_a_service_account_of_their_own(config_for, jobs_access):
    """With jobs access the owner's server runs as the owner's own jobs ServiceAccount and
    knows its jobs namespace; a member whose tier has no jobs role, and a user who came in
    through an IdP group (who has no jobs namespace), get no API access at all."""
    tiers = (
        TierSpec("students", default=True),
        TierSpec("staff", jobs=True),
    )
    spec = research_group(
        jobs_access=jobs_access,
        members=("bo@uni.example", "cy@uni.example"),
        tiers=tiers,
        member_tiers=(("cy@uni.example", "staff"),),
        group_grants=(GroupGrantSpec("lab-staff", tier="staff"),),
    )
    c = config_for(spec)
    assert c.KubeSpawner.automount_service_account_token is False

    owner = spawn_settings(c, spawner())
    staff = spawn_settings(c, spawner("cy@uni.example"))
    if jobs_access:
        assert owner.service_account == spec.jobs_account("ada@uni.example")
        assert owner.environment["JOBS_NAMESPACE"] == spec.jobs_namespace("ada@uni.example")
        assert staff.service_account == spec.jobs_account("cy@uni.example")
        assert staff.service_account != owner.service_account
        assert staff.automount_service_account_token is True
    else:
        assert owner.service_account is None and "JOBS_NAMESPACE" not in owner.environment
    for user in (spawner("bo@uni.example"), spawner("dee@uni.example", groups=("lab-staff",))):
        student = spawn_settings(c, user)
        assert student.service_account is None
        assert student.automount_service_account_token is False
        assert "JOBS_NAMESPACE" not in student.environment


def test_user_pods_are_restricted_friendly(config_for):
    c = config_for(course())

    assert c.KubeSpawner.uid == 1000
    assert c.KubeSpawner.fs_gid == 100
    assert c.KubeSpawner.allow_privilege_escalation is False
    assert c.KubeSpawner.pod_security_context == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    context = c.KubeSpawner.container_security_context
    assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize(("notebooks", "named", "limit"), [(1, False, None), (3, True, 2)])
def test_named_servers(config_for, notebooks, named, limit):
    c = config_for(course(notebooks_per_user=notebooks))

    assert c.JupyterHub.allow_named_servers is named
    # The default server counts as one of the user's notebooks.
    assert c.JupyterHub.get("named_server_limit_per_user") == limit


REGISTRIES = ("quay.io", "ghcr.io", "registry-1.uni.example:5000")


@pytest.fixture
def custom_image_option(config_for):
    spec = course(custom_image="ghcr.io/lab/analysis:1.2", allowed_registries=REGISTRIES)
    c = config_for(spec)
    return profiles(c)["small"]["profile_options"]["image"]


def test_custom_image_is_a_choice_and_others_may_be_typed(custom_image_option):
    custom = custom_image_option["choices"]["custom"]
    assert custom["kubespawner_override"]["image"] == "ghcr.io/lab/analysis:1.2"
    unlisted = custom_image_option["unlisted_choice"]
    assert unlisted["enabled"] is True
    assert unlisted["kubespawner_override"] == {"image": "{value}", "default_url": "/lab"}


@pytest.mark.parametrize(
    "reference",
    [
        "quay.io/jupyter/scipy-notebook:2025-01-06",
        "ghcr.io/lab/analysis:1.2",
        "ghcr.io/lab/analysis",
        "registry-1.uni.example:5000/group/sub-group/tool_x:v1.0",
        "quay.io/jupyter/base-notebook@sha256:" + "a" * 64,
    ],
)
def test_validation_regex_accepts_allowed_registries(custom_image_option, reference):
    # KubeSpawner checks typed images with re.match(validation_regex, value).
    assert re.match(custom_image_option["unlisted_choice"]["validation_regex"], reference)


@pytest.mark.parametrize(
    "reference",
    [
        "quay.io.evil.com/x",
        "quay.io.evil.com/jupyter/scipy-notebook:latest",
        "evil.com/quay.io/x",
        "docker.io/library/python:3",
        "jupyter/scipy-notebook:latest",
        "quayXio/x",
        "registry-1.uni.example/group/tool:v1",  # allowed only with its port
        "ghcr.io/lab/analysis:1.2\n",
        "ghcr.io/lab/analysis:1.2 --privileged",
        "ghcr.io/../etc/passwd",
        "ghcr.io/lab/{username}",
        "",
    ],
)
def test_validation_regex_rejects_other_registries(custom_image_option, reference):
    assert not re.match(custom_image_option["unlisted_choice"]["validation_regex"], reference)


def test_values_with_quotes_and_newlines_stay_data(config_for, tmp_path):
    canary = tmp_path / "canary"
    sneaky = f'"""\n\'\'\'\nopen({str(canary)!r}, "w").write("pwned")  # {{username}} <b>'
    spec = course(
        server_options=(ServerOption("small", sneaky, 0.5, 1, 1, 2),),
        images=(ImageChoice("scipy", sneaky, LAB.reference),),
        external_volumes=(
            ExternalVolume("survey", "nfs", "/mnt/{username}", True, server="nfs", path='/a"b'),
        ),
        members=(sneaky,),
    )

    c = config_for(spec)

    assert not canary.exists()
    profile = profiles(c)["small"]
    # Shown on KubeSpawner's spawn form, which does not escape: escaped as HTML, else intact.
    assert html.unescape(profile["display_name"]) == sneaky
    assert "<b>" not in profile["display_name"] and "&lt;b&gt;" in profile["display_name"]
    image_choice = profile["profile_options"]["image"]["choices"]["scipy"]
    assert html.unescape(image_choice["display_name"]) == sneaky
    assert sneaky in c.Authenticator.allowed_users
    # KubeSpawner formats volumes and mounts with the user's fields: braces stay literal.
    mount_path = c.KubeSpawner.volume_mounts["ext-survey"]["mountPath"]
    assert mount_path.format(username="alan", pvc_name="home-alan") == "/mnt/{username}"
    assert c.KubeSpawner.volumes["ext-survey"]["nfs"]["path"] == '/a"b'


def test_config_file_is_static():
    """The config file never contains a hub's data: the values file carries all of it."""
    text = CONFIG_FILE.read_text()
    assert "hub-astro-101" not in text and "ada@" not in text
    assert 'os.environ.get("HUB_VALUES_FILE", "/usr/local/etc/jupyterhub/values.json")' in text
    assert hubconfig.CONFIG_MOUNT_PATH == "/usr/local/etc/jupyterhub"


# --- Member tiers --------------------------------------------------------------------------

STUDENTS = TierSpec("students", server_options=("small",), gpu=False, shared="ro")
STAFF = TierSpec("staff", shared="rw", jobs=True)


def tiered(**overrides) -> HubSpec:
    """A course with GPUs: students get the small size without a GPU and the shared volume
    read-only; staff get everything, the volume writable and the jobs role."""
    values = dict(
        server_options=(SMALL, LARGE),
        gpu=A100,
        images=(LAB, RSTUDIO),
        jobs_access=True,
        members=("stu", "sam", "ta"),
        tiers=(TierSpec("members", default=True), STUDENTS, STAFF),
        member_tiers=(("stu", "students"), ("ta", "staff")),
        group_grants=(
            GroupGrantSpec("physics-students", "member", "students"),
            GroupGrantSpec("physics-staff", "co-owner"),
        ),
    )
    values.update(overrides)
    return course(**values)


def test_members_file_lists_users_groups_and_tiers():
    members = members_values(tiered())

    assert members["admin_users"] == ["ada@uni.example", "grace@uni.example"]
    assert set(members["allowed_users"]) == {
        "ada@uni.example",
        "grace@uni.example",
        "stu",
        "sam",
        "ta",
    }
    assert members["allowed_groups"] == ["physics-staff", "physics-students"]
    assert members["admin_groups"] == ["physics-staff"]
    assert members["user_tiers"] == {"stu": "students", "sam": "members", "ta": "staff"}
    assert members["group_tiers"] == {"physics-students": "students"}
    assert members["tiers"]["students"] == {
        "profiles": ["small-no-gpu"],
        "images": ["scipy", "rstudio"],
        "custom_images": False,
        "shared": "ro",
        "jobs": False,
    }
    assert members["tiers"]["staff"]["profiles"] == [
        "small",
        "large",
        "small-no-gpu",
        "large-no-gpu",
    ]
    assert members["tiers"]["staff"]["shared"] == "rw" and members["tiers"]["staff"]["jobs"]
    assert members["owner_access"]["shared"] == "rw"


def test_no_shared_volume_and_no_jobs_role_where_the_hub_has_none():
    members = members_values(tiered(shared_size_gib=0, shared_mode="none", jobs_access=False))

    assert {tier["shared"] for tier in members["tiers"].values()} == {None}
    assert not any(tier["jobs"] for tier in members["tiers"].values())


def test_a_tier_limited_to_some_images_gets_no_custom_image():
    spec = tiered(
        custom_image="ghcr.io/lab/analysis:1.2",
        allowed_registries=("ghcr.io",),
        tiers=(TierSpec("members", default=True), TierSpec("students", images=("rstudio",))),
    )
    members = members_values(spec)

    assert members["tiers"]["students"]["images"] == ["rstudio"]
    assert members["tiers"]["students"]["custom_images"] is False
    assert members["tiers"]["members"]["images"] == ["scipy", "rstudio", "custom"]
    assert members["tiers"]["members"]["custom_images"] is True


def test_a_gpu_hub_offers_each_size_also_without_a_gpu(config_for):
    by_slug = profiles(config_for(tiered()))

    assert list(by_slug) == ["small", "large", "small-no-gpu", "large-no-gpu"]
    assert "extra_resource_limits" in by_slug["small"]["kubespawner_override"]
    assert "extra_resource_limits" not in by_slug["small-no-gpu"]["kubespawner_override"]
    assert "node_selector" not in by_slug["small-no-gpu"]["kubespawner_override"]
    assert by_slug["small"]["default"] is True


def test_students_see_only_the_cpu_profile_and_get_the_shared_volume_read_only(config_for):
    c = config_for(tiered())
    student = spawner("stu")

    by_slug = profiles(c, student)
    assert list(by_slug) == ["small-no-gpu"]
    assert by_slug["small-no-gpu"]["default"] is True
    settings = spawn_settings(c, student)
    assert settings.volume_mounts["shared"]["readOnly"] is True
    assert settings.volumes["shared"]["persistentVolumeClaim"]["readOnly"] is True
    assert settings.service_account is None
    assert settings.automount_service_account_token is False


def test_staff_may_start_gpu_servers_with_the_shared_volume_writable(config_for):
    c = config_for(tiered())
    staff = spawner("ta")

    assert "large" in profiles(c, staff)
    settings = spawn_settings(c, staff)
    assert settings.volume_mounts["shared"]["readOnly"] is False
    assert settings.service_account == tiered().jobs_account("ta")
    assert settings.automount_service_account_token is True


def test_members_without_a_tier_get_the_default_tier(config_for):
    c = config_for(tiered(tiers=(TierSpec("members", default=True, shared="ro"), STUDENTS)))

    assert "large" in profiles(c, spawner("sam"))
    assert spawn_settings(c, spawner("sam")).volume_mounts["shared"]["readOnly"] is True


def test_group_members_get_their_group_tier_and_co_owner_groups_everything(config_for):
    c = config_for(tiered())

    assert list(profiles(c, spawner("x", groups=("physics-students",)))) == ["small-no-gpu"]
    boss = spawner("y", groups=("physics-staff",))
    assert len(profiles(c, boss)) == 4
    assert spawn_settings(c, boss).volume_mounts["shared"]["readOnly"] is False


def test_the_owner_writes_the_shared_volume_even_when_members_read_only(config_for):
    c = config_for(tiered())

    assert spawn_settings(c, spawner()).volume_mounts["shared"]["readOnly"] is False


def test_a_tier_with_nothing_left_starts_nothing(tmp_path, monkeypatch):
    spec = tiered(tiers=(TierSpec("members", default=True), TierSpec("students", ("gone",))))
    c = load(tmp_path, monkeypatch, hub_values(spec, OAUTH), members_values(spec))

    assert profiles(c, spawner("stu")) == {}
    with pytest.raises(web.HTTPError) as refused:
        spawn_settings(c, spawner("stu"))
    assert refused.value.status_code == 403


def test_a_changed_members_file_applies_without_reloading_the_config(tmp_path, monkeypatch):
    spec = tiered()
    c = load(tmp_path, monkeypatch, hub_values(spec, OAUTH), members_values(spec))
    assert list(profiles(c, spawner("stu"))) == ["small-no-gpu"]

    promoted = tiered(member_tiers=(("stu", "staff"),))
    (tmp_path / "members.json").write_text(json.dumps(members_values(promoted)) + "\n")

    assert "large" in profiles(c, spawner("stu"))
    assert spawn_settings(c, spawner("stu")).volume_mounts["shared"]["readOnly"] is False


def test_login_follows_the_members_file(tmp_path, monkeypatch):
    spec = tiered()
    c = load(tmp_path, monkeypatch, hub_values(spec, OAUTH), members_values(spec))
    authenticator = c.JupyterHub.authenticator_class(config=c)

    assert authenticator.allow_existing_users is False
    assert authenticator.manage_groups is True
    assert authenticator.auth_state_groups_key == "oauth_user.groups"
    assert authenticator.allowed_groups == {"physics-staff", "physics-students"}
    assert authenticator.admin_groups == {"physics-staff"}
    assert "newcomer" not in authenticator.allowed_users

    (tmp_path / "members.json").write_text(
        json.dumps(members_values(tiered(members=("stu", "newcomer"))))
    )
    authenticator.load_members()
    assert "newcomer" in authenticator.allowed_users
    assert "sam" not in authenticator.allowed_users
    assert authenticator.is_member("x", ["physics-students"])
    assert not authenticator.is_member("sam", [])


def test_admin_follows_the_members_file_also_downwards(tmp_path, monkeypatch):
    spec = tiered()
    c = load(tmp_path, monkeypatch, hub_values(spec, OAUTH), members_values(spec))
    authenticator = c.JupyterHub.authenticator_class(config=c)

    assert authenticator.with_admin({"name": "grace@uni.example", "admin": None}, [])["admin"]
    assert authenticator.with_admin({"name": "y", "groups": ["physics-staff"]}, [])["admin"]
    # A co-owner demoted to member: False, not None (None would keep the hub's old record).
    (tmp_path / "members.json").write_text(json.dumps(members_values(tiered(co_owners=()))))
    assert (
        authenticator.with_admin({"name": "grace@uni.example", "admin": None}, [])["admin"] is False
    )
    assert authenticator.with_admin("stu", []) == {"name": "stu", "admin": False}
    assert authenticator.with_admin(None, []) is None
