"""The chart as helm renders it, without a cluster: lint, the objects of each values set, the
schema's refusals, and the settings the pods get, loaded by the portal's own settings module.

The cluster side (server dry-runs, Pod Security, install and upgrade) is in test_cluster.py.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from tests.chart.conftest import (
    ALL_SECRET_KEYS,
    CHART,
    EVERYTHING,
    MINIMAL,
    REPO,
    REQUIRED,
    VALUES_SETS,
    merged,
    versions_env,
)
from tests.support import redis_url_for_this_worker
from tests.test_deployment_files import (
    copy_instructions,
    dockerfile_env,
    exec_form,
    instructions_named,
)

COMPONENTS = ("web", "worker", "beat", "watcher")
SECRETS_DIR = "/etc/hub-on-demand/secrets"
# From the kubelet's downward API, for $(POD_IP) in ALLOWED_HOSTS; not a setting.
NOT_SETTINGS = {"POD_IP"}


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def component(objects: list[dict], name: str, kind: str = "Deployment") -> dict:
    (found,) = [
        o
        for o in objects
        if o["kind"] == kind and o["metadata"]["labels"]["app.kubernetes.io/component"] == name
    ]
    return found


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container_env(objects: list[dict], workload: dict) -> dict[str, str]:
    """What the container's environment holds: the ConfigMap it loads, then its own env."""
    (container,) = pod_spec(workload)["containers"]
    env = {}
    configmaps = by_kind(objects, "ConfigMap")
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    for item in container["env"]:
        env[item["name"]] = item.get("value", "<from the pod>")
    return env


# --- helm itself and the chart's metadata -------------------------------------------------------


def test_helm_is_the_pinned_release(helm, tmp_path):
    pinned = versions_env()["HELM_VERSION"]
    assert helm.run("version", "--template", "{{.Version}}").stdout == pinned
    gomod = (REPO / "devcluster/helm/go.mod").read_text()
    assert re.search(rf"^\s*helm\.sh/helm/v3 {re.escape(pinned)}\b", gomod, re.M), gomod
    assert "tool helm.sh/helm/v3/cmd/helm" in gomod
    # Without a cluster, helm assumes the Kubernetes version of the client-go it was built
    # with (helm's own release builds set it; the library's fallback is v1.20, which the
    # chart's kubeVersion refuses).
    client_go = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", gomod, re.M)
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (probe / "templates" / "version.yaml").write_text("# {{ .Capabilities.KubeVersion.Version }}\n")
    rendered = helm.run("template", str(probe)).stdout
    assert f"# v1.{client_go[1]}.0" in rendered, rendered


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert (CHART / "values.schema.json").exists()


@pytest.mark.parametrize("values_set", sorted(VALUES_SETS))
def test_lint_passes(helm, values_set):
    result = helm.run("lint", "--strict", str(CHART), values=VALUES_SETS[values_set])
    assert "0 chart(s) failed" in result.stdout


# --- What each values set renders ---------------------------------------------------------------


@pytest.mark.parametrize("values_set", sorted(VALUES_SETS))
def test_every_workload_runs_restricted_as_the_image_user(helm, values_set):
    objects = helm.template(VALUES_SETS[values_set])
    workloads = [o for o in objects if o["kind"] in ("Deployment", "Job")]
    assert workloads
    for workload in workloads:
        spec = pod_spec(workload)
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True
        assert (security["runAsUser"], security["runAsGroup"]) == (10001, 10001)
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = spec["containers"]
        own = container["securityContext"]
        assert own["allowPrivilegeEscalation"] is False
        assert own["readOnlyRootFilesystem"] is True
        assert own["capabilities"] == {"drop": ["ALL"]}
        # The only writable place: /tmp, an emptyDir (beat's schedule lives there).
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
        assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")
        # Where the processes gather their metrics and touch their heartbeats: on it.
        env = container_env(objects, workload)
        for variable in ("PROMETHEUS_MULTIPROC_DIR", "HEALTH_HEARTBEAT_DIR"):
            assert Path(env[variable]).is_relative_to("/tmp"), (variable, env[variable])
        assert env["PROMETHEUS_MULTIPROC_DIR"] == dockerfile_env()["PROMETHEUS_MULTIPROC_DIR"]


def test_components_and_their_commands(helm, settings):
    objects = helm.template(REQUIRED)
    deployments = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in by_kind(objects, "Deployment").values()
    }
    assert set(deployments) == set(COMPONENTS)
    commands = {name: pod_spec(d)["containers"][0]["command"] for name, d in deployments.items()}

    web = commands["web"]
    assert web[:2] == ["gunicorn", "portal.wsgi:application"]
    assert "--bind=0.0.0.0:8000" in web
    (port,) = pod_spec(deployments["web"])["containers"][0]["ports"]
    assert (port["name"], port["containerPort"]) == ("http", 8000)

    worker = commands["worker"]
    assert worker[:4] == ["celery", "-A", "portal", "worker"]
    queues = set(worker[worker.index("-Q") + 1].split(","))
    assert {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} <= queues
    assert "celery" in queues  # Celery's default queue

    assert commands["beat"][:4] == ["celery", "-A", "portal", "beat"]
    assert commands["beat"][commands["beat"].index("--schedule") + 1].startswith("/tmp/")
    assert commands["watcher"] == ["python", "manage.py", "watch_hubs"]

    # Exactly one beat, also during a rollout.
    beat = deployments["beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"] == {"type": "Recreate"}


def test_probes(helm):
    from portal.monitoring import OPERATIONS_PATHS

    objects = helm.template(REQUIRED)
    web = pod_spec(component(objects, "web"))["containers"][0]
    assert web["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert web["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"/healthz", "/readyz"} <= set(OPERATIONS_PATHS)
    for name in ("worker", "beat", "watcher"):
        probe = pod_spec(component(objects, name))["containers"][0]["livenessProbe"]
        assert probe["exec"]["command"] == ["python", "manage.py", "healthcheck", name]
        # Fresher than HEALTH_MAX_AGE_SECONDS (60) is alive; three misses a minute apart.
        assert (probe["periodSeconds"], probe["failureThreshold"]) == (60, 3)
    # The kubelet names the pod by its IP: that host is allowed.
    env = container_env(objects, component(objects, "web"))
    assert env["ALLOWED_HOSTS"] == "portal.example.org,$(POD_IP)"
    (pod_ip,) = [e for e in web["env"] if e["name"] == "POD_IP"]
    assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert [e["name"] for e in web["env"]].index("POD_IP") < [e["name"] for e in web["env"]].index(
        "ALLOWED_HOSTS"
    ), "$(POD_IP) expands only variables defined before it"


def test_web_readiness_checks_default_to_the_portals(helm, chart_environment):
    def checks(values: dict) -> dict[str, str | None]:
        objects = helm.template(values)
        return {
            name: container_env(objects, component(objects, name)).get("READINESS_CHECKS")
            for name in COMPONENTS
        }

    assert checks(REQUIRED) == {
        "web": "database,broker,kubernetes",
        "worker": None,
        "beat": None,
        "watcher": None,
    }
    probe = ["-c", "import portal.settings as s; print(','.join(s.READINESS_CHECKS))"]
    assert run_python(probe, chart_environment).strip() == "database,broker,kubernetes"
    unset = {k: v for k, v in chart_environment.items() if k != "READINESS_CHECKS"}
    assert run_python(probe, unset).strip() == "database,broker,kubernetes"
    # Without the API server: an outage of it leaves the web in its Service.
    without = merged(REQUIRED, {"web": {"readinessChecks": ["database", "broker"]}})
    assert checks(without)["web"] == "database,broker"
    assert checks(merged(REQUIRED, {"web": {"readinessChecks": []}}))["web"] == ""
    nothing = {**chart_environment, "READINESS_CHECKS": ""}
    assert run_python(probe, nothing).strip() == ""


def test_liveness_probes_read_the_heartbeats_their_services_touch(helm, settings, tmp_path):
    """Each probe's command, run as manage.py runs it, against the chart's HEALTH_HEARTBEAT_DIR
    (on the pod's /tmp, here under tmp_path): dead before the service said it was alive,
    alive once it did, dead again when it stopped."""
    from django.core.management import CommandError, call_command

    from portal.monitoring import heartbeat

    objects = helm.template(EVERYTHING)
    for name in ("worker", "beat", "watcher"):
        workload = component(objects, name)
        directory = container_env(objects, workload)["HEALTH_HEARTBEAT_DIR"]
        settings.HEALTH_HEARTBEAT_DIR = str(tmp_path / directory.removeprefix("/tmp/"))
        command = pod_spec(workload)["containers"][0]["livenessProbe"]["exec"]["command"]
        assert command[:2] == ["python", "manage.py"]
        with pytest.raises(CommandError, match="no heartbeat"):
            call_command(*command[2:])
        heartbeat.beat(name)
        call_command(*command[2:])
        heartbeat.stopped(name)
        with pytest.raises(CommandError):
            call_command(*command[2:])


def run_python(args: list[str], env: dict[str, str]) -> str:
    """What this virtualenv's Python prints for `args`, run in the repository (the image's
    /app has its layout) with `env`; a failure fails the test with the output."""
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def gunicorn_config(command: list[str], env: dict[str, str]) -> dict[str, str]:
    """The settings gunicorn runs with for `command`, as `gunicorn --print-config` prints
    them."""
    printed = run_python(["-m", "gunicorn", *command[1:], "--print-config"], env)
    return dict(re.findall(r"^(\w+)\s+= (.*)$", printed, re.M))


def test_web_runs_gunicorn_with_its_config_file_as_the_image_does(helm, chart_environment):
    """gunicorn reads ./gunicorn.conf.py (the portal's JSON logs and access log, metrics
    gathered across its workers); the chart's command sets the size and keeps the rest."""
    objects = helm.template(REQUIRED)
    (container,) = pod_spec(component(objects, "web"))["containers"]
    assert container["command"][0] == "gunicorn" and "workingDir" not in container
    assert instructions_named("WORKDIR")[-1] == "/app"
    assert any("gunicorn.conf.py" in sources and to == "./" for sources, to in copy_instructions())

    chart = gunicorn_config(container["command"], chart_environment)
    (cmd,) = instructions_named("CMD")
    image = gunicorn_config(exec_form(cmd), chart_environment)
    assert chart["config"] == "./gunicorn.conf.py"
    assert (chart["logger_class"], chart["on_starting"], chart["child_exit"]) == (
        "<AccessLogger()>",
        "<on_starting()>",
        "<child_exit()>",
    )
    assert "structlog.stdlib.ProcessorFormatter" in chart["logconfig_dict"]
    same = ["config", "logger_class", "on_starting", "child_exit", "accesslog", "worker_tmp_dir"]
    assert {k: chart[k] for k in same} == {k: image[k] for k in same}
    assert chart["accesslog"] == "-" and chart["worker_tmp_dir"] == "/dev/shm"
    assert (chart["workers"], chart["threads"], chart["timeout"]) == ("2", "4", "60")


def test_migrations_run_as_a_hook_before_install_and_upgrade(helm):
    objects = helm.template(REQUIRED)
    job = component(objects, "migrations", kind="Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    spec = pod_spec(job)
    assert spec["containers"][0]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert spec["restartPolicy"] == "Never"
    # It runs before the release's ConfigMap and ServiceAccount exist: settings inline, the
    # namespace's default ServiceAccount, no token (it needs only the database).
    assert "envFrom" not in spec["containers"][0]
    assert (spec["serviceAccountName"], spec["automountServiceAccountToken"]) == ("default", False)
    web_env = container_env(objects, component(objects, "web"))
    del web_env["READINESS_CHECKS"]  # the web's own
    assert container_env(objects, job) == web_env


def test_service_account_is_the_identity_of_every_component(helm):
    objects = helm.template(EVERYTHING)
    (account,) = by_kind(objects, "ServiceAccount").values()
    assert account["metadata"]["annotations"] == {"example.org/owner": "research-computing"}
    for name in COMPONENTS:
        assert (
            pod_spec(component(objects, name))["serviceAccountName"]
            == (account["metadata"]["name"])
        )
    # An existing account instead: none is created and the pods use it.
    objects = helm.template(merged(REQUIRED, {"serviceAccount": {"create": False, "name": "ops"}}))
    assert not by_kind(objects, "ServiceAccount")
    assert {pod_spec(component(objects, n))["serviceAccountName"] for n in COMPONENTS} == {"ops"}


def test_rbac_toggle(helm):
    assert (
        (CHART / "templates" / "rbac.yaml").read_text().startswith("{{- if .Values.rbac.create }}")
    )
    without = {o["kind"] for o in helm.template(merged(REQUIRED, {"rbac": {"create": False}}))}
    assert not without & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


@pytest.mark.parametrize(
    ("values", "mounted"),
    [
        (REQUIRED, {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "METRICS_TOKEN"}),
        (MINIMAL, {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"}),
        (EVERYTHING, set(ALL_SECRET_KEYS)),
    ],
    ids=["required", "minimal", "everything"],
)
def test_credentials_come_from_the_existing_secret_as_files(helm, values, mounted):
    objects = helm.template(values)
    assert not by_kind(objects, "Secret"), "the chart creates no Secret"
    for workload in [o for o in objects if o["kind"] in ("Deployment", "Job")]:
        spec = pod_spec(workload)
        (secret,) = [v["secret"] for v in spec["volumes"] if v["name"] == "secrets"]
        assert secret["secretName"] == "portal-credentials"
        assert {i["key"] for i in secret["items"]} == {ALL_SECRET_KEYS[n] for n in mounted}
        # A needed key missing from the Secret keeps the pod from starting, loudly.
        assert "optional" not in secret
        env = container_env(objects, workload)
        files = {k.removesuffix("_FILE"): v for k, v in env.items() if k.endswith("_FILE")}
        assert files == {n: f"{SECRETS_DIR}/{ALL_SECRET_KEYS[n]}" for n in mounted}
        # No credential in plain environment variables.
        assert not set(ALL_SECRET_KEYS) & set(env)
    # The key names are values too.
    renamed = helm.template(merged(REQUIRED, {"secrets": {"keys": {"databaseUrl": "pg"}}}))
    env = container_env(renamed, component(renamed, "worker"))
    assert env["DATABASE_URL_FILE"] == f"{SECRETS_DIR}/pg"


def test_settings_from_values(helm):
    objects = helm.template(EVERYTHING, "portal", "research")
    env = container_env(objects, component(objects, "worker"))
    expected = {
        "PORTAL_URL": "https://portal.example.org",
        "CSRF_TRUSTED_ORIGINS": "https://portal.example.org",
        "ALLOWED_HOSTS": "portal.example.org,portal.internal,$(POD_IP)",
        "HUBS_DOMAIN": "hubs.example.org",
        "INGRESS_CLASS": "nginx",
        "INGRESS_ANNOTATIONS": '{"cert-manager.io/cluster-issuer":"letsencrypt"}',
        "HUB_STORAGE_CLASS": "fast",
        "HUB_DENIED_EGRESS": "203.0.113.0/24",
        "HUB_QUOTA_CAPS": '{"requests.nvidia.com/gpu":"16"}',
        "OIDC_ISSUER": "https://idp.example.org/realms/research",
        "OIDC_CLIENT_ID": "portal",
        "OIDC_ADMIN_GROUPS": "portal-admins",
        "OIDC_HUB_CLIENT_ID": "hubs",
        "GITHUB_CLIENT_ID": "gh-portal",
        "EMAIL_HOST": "smtp.example.org",
        "EMAIL_HOST_USER": "portal",
        "SECURE_HSTS_SECONDS": "600",
        "KUBECONFIG": "/etc/hub-on-demand/kubeconfig/kubeconfig",
        "HUB_WATCH_LEASE_NAMESPACE": "research",
        "HUB_WATCH_LEASE": "portal-hub-on-demand-watcher",
        "USAGE_CURRENCY": "EUR",
    }
    assert {k: env.get(k) for k in expected} == expected
    # Settings left empty keep the portal's defaults: no empty variable overrides them.
    plain = container_env(helm.template(REQUIRED), component(helm.template(REQUIRED), "worker"))
    assert not {"HUB_IMAGE", "INGRESS_CLASS", "OIDC_ISSUER", "KUBECONFIG", "EMAIL_HOST"} & set(
        plain
    )
    assert all(value != "" for value in plain.values())


def test_every_variable_the_chart_sets_is_read_by_the_portal(helm):
    objects = helm.template(EVERYTHING)
    names = set()
    for workload in [o for o in objects if o["kind"] in ("Deployment", "Job")]:
        names |= {k.removesuffix("_FILE") for k in container_env(objects, workload)}
    source = "\n".join(p.read_text() for p in (REPO / "portal").rglob("*.py"))
    unread = {n for n in names - NOT_SETTINGS if f'"{n}"' not in source}
    assert not unread, f"the portal reads none of {sorted(unread)}"


@pytest.fixture
def chart_environment(helm, tmp_path):
    """The web container's environment for EVERYTHING, with the Secret's files in tmp_path."""
    objects = helm.template(EVERYTHING)
    env = container_env(objects, component(objects, "web"))
    for name, key in ALL_SECRET_KEYS.items():
        (tmp_path / key).write_text(
            {
                "SECRET_KEY": "chart-test-" + "k" * 50,
                "DATABASE_URL": "postgres://portal:pw@db.example.org:5432/portal",
                "REDIS_URL": "redis://redis.example.org:6379/3",
            }.get(name, f"value-of-{key}")
            + "\n"
        )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    env = {
        k: v.replace(SECRETS_DIR, str(tmp_path))
        .replace("/etc/hub-on-demand/kubeconfig/kubeconfig", str(kubeconfig))
        .replace("$(POD_IP)", "10.244.0.7")
        for k, v in env.items()
    }
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env}


def test_the_portal_loads_the_chart_settings(chart_environment, tmp_path):
    probe = (
        "import portal.settings as s; import json; d = s.DATABASES['default']; "
        "print(json.dumps([s.SECRET_KEY, d['HOST'], d['NAME'], s.CELERY_BROKER_URL, "
        "s.OIDC_CLIENT_SECRET, s.OIDC_HUB_REGISTRATION_TOKEN, s.OIDC_HUB_CLIENT_SECRET, "
        "s.EMAIL_HOST_PASSWORD, s.SOCIAL_AUTH_GITHUB_SECRET, s.ALLOWED_HOSTS, s.KUBECONFIG, "
        "s.HUB_WATCH_LEASE, s.PORTAL_URL, s.DEBUG, s.METRICS_TOKEN, s.WORKER_METRICS_PORT, "
        "s.WATCHER_METRICS_PORT]))"
    )
    assert yaml.safe_load(run_python(["-c", probe], chart_environment)) == [
        "chart-test-" + "k" * 50,
        "db.example.org",
        "portal",
        "redis://redis.example.org:6379/3",
        "value-of-oidc-client-secret",
        "value-of-oidc-hub-registration-token",
        "value-of-oidc-hub-client-secret",
        "value-of-email-host-password",
        "value-of-github-client-secret",
        ["portal.example.org", "portal.internal", "10.244.0.7"],
        str(tmp_path / "kubeconfig"),
        "portal-hub-on-demand-watcher",
        "https://portal.example.org",
        False,
        "value-of-metrics-token",
        9808,
        9809,
    ]


def test_deploy_check_passes_with_the_chart_settings(chart_environment):
    """Django's deployment checklist, without a database connection (as in the Docker test)."""
    run_python(["manage.py", "check", "--deploy", "--fail-level", "ERROR"], chart_environment)


def test_metrics_through_the_public_ingress_want_the_token(helm, chart_environment):
    """The Ingress sends every path of the portal's host to the web's port, /metrics too:
    there it answers only with the token the chart mounts (none mounted: 404)."""
    objects = helm.template(EVERYTHING)
    (ingress,) = by_kind(objects, "Ingress").values()
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert (path["path"], path["pathType"], path["backend"]["service"]["port"]) == (
        "/",
        "Prefix",
        {"name": "http"},
    )
    probe = [
        "-c",
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'portal.settings'; "
        "django.setup(); from django.test import Client; "
        "get = lambda **h: Client().get('/metrics', HTTP_HOST='portal.example.org', "
        "secure=True, **h).status_code; "
        "print(get(), get(HTTP_AUTHORIZATION='Bearer value-of-metrics-tokem'))",
    ]
    assert run_python(probe, chart_environment).split() == ["401", "403"]
    unmounted = {k: v for k, v in chart_environment.items() if k != "METRICS_TOKEN_FILE"}
    assert run_python(probe, unmounted).split() == ["404", "404"]


def test_settings_changes_roll_the_pods(helm):
    def checksums(values: dict) -> dict[str, str]:
        objects = helm.template(values)
        return {
            o["metadata"]["name"]: o["spec"]["template"]["metadata"]["annotations"][
                "checksum/config"
            ]
            for o in objects
            if o["kind"] in ("Deployment", "Job")
        }

    before = checksums(REQUIRED)
    assert len(set(before.values())) == 1
    assert checksums(REQUIRED) == before
    after = checksums(merged(REQUIRED, {"portal": {"logLevel": "DEBUG"}}))
    assert after.keys() == before.keys()
    assert all(after[name] != before[name] for name in before)
    # Replicas are not settings: the pods stay.
    assert checksums(merged(REQUIRED, {"worker": {"replicas": 3}})) == before


def test_scheduling_values_global_and_per_component(helm):
    objects = helm.template(EVERYTHING)
    web, worker, beat = (pod_spec(component(objects, n)) for n in ("web", "worker", "beat"))
    assert beat["nodeSelector"] == {"type": "kwok"}
    assert worker["nodeSelector"] == {"node.kubernetes.io/instance-type": "cpu"}
    assert beat["tolerations"] == EVERYTHING["tolerations"] == web["tolerations"]
    assert web["affinity"] == EVERYTHING["web"]["affinity"]
    assert "affinity" not in beat
    assert beat["imagePullSecrets"] == [{"name": "pull"}]
    assert pod_spec(component(objects, "web"))["containers"][0]["image"] == (
        "registry.example.org/hub-on-demand:0.1.0"
    )
    tagged = helm.template(merged(REQUIRED, {"image": {"tag": "2026.1"}}))
    assert pod_spec(component(tagged, "beat"))["containers"][0]["image"] == "hub-on-demand:2026.1"


def test_ingress_service_budget_and_autoscaler(helm):
    objects = helm.template(EVERYTHING)
    (ingress,) = by_kind(objects, "Ingress").values()
    (service,) = [s for s in by_kind(objects, "Service").values() if s["spec"].get("type")]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "portal-tls", "hosts": ["portal.example.org"]}]
    assert ingress["metadata"]["annotations"] == {"cert-manager.io/cluster-issuer": "letsencrypt"}
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "portal.example.org"  # from portal.url
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": "http"},
    }
    web = component(objects, "web")
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    (budget,) = by_kind(objects, "PodDisruptionBudget").values()
    assert budget["spec"]["selector"] == web["spec"]["selector"]
    assert budget["spec"]["minAvailable"] == 1
    one = merged(REQUIRED, {"web": {"podDisruptionBudget": {"maxUnavailable": 1}}})
    (budget,) = by_kind(helm.template(one), "PodDisruptionBudget").values()
    assert budget["spec"] == {"maxUnavailable": 1, "selector": web["spec"]["selector"]}
    (autoscaler,) = by_kind(objects, "HorizontalPodAutoscaler").values()
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == web["metadata"]["name"]
    assert "replicas" not in web["spec"], "the autoscaler owns the web's replicas"
    assert component(helm.template(REQUIRED), "web")["spec"]["replicas"] == 2

    assert not {"Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"} & {
        o["kind"] for o in helm.template(MINIMAL)
    }


def test_network_policies(helm):
    objects = helm.template(EVERYTHING)
    policies = {
        p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]: p["spec"]
        for p in by_kind(objects, "NetworkPolicy").values()
    }
    assert set(policies) == {*COMPONENTS, "migrations"}
    ingress_nginx = {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}

    def allowed(name: str) -> list[tuple[list, list[int]]]:
        return [
            ([p["namespaceSelector"] for p in rule["from"]], [p["port"] for p in rule["ports"]])
            for rule in policies[name]["ingress"]
        ]

    assert allowed("web") == [([ingress_nginx, monitoring], [8000])]
    assert allowed("worker") == [([monitoring], [9808])]
    assert allowed("watcher") == [([monitoring], [9809])]
    assert allowed("beat") == allowed("migrations") == []
    for policy in policies.values():
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        assert policy["egress"] == EVERYTHING["networkPolicy"]["egress"]
    # Egress stays open by default.
    open_egress = helm.template(merged(REQUIRED, {"networkPolicy": {"enabled": True}}))
    for policy in by_kind(open_egress, "NetworkPolicy").values():
        assert policy["spec"]["policyTypes"] == ["Ingress"] and "egress" not in policy["spec"]
    assert not by_kind(helm.template(REQUIRED), "NetworkPolicy")


def test_service_monitor_scrapes_every_metrics_port_with_the_token(helm):
    objects = helm.template(EVERYTHING)
    (monitor,) = by_kind(objects, "ServiceMonitor").values()
    spec = monitor["spec"]
    selector = spec["selector"]
    (expression,) = selector["matchExpressions"]
    selected = [
        s
        for s in by_kind(objects, "Service").values()
        if selector["matchLabels"].items() <= s["metadata"]["labels"].items()
        and s["metadata"]["labels"]["app.kubernetes.io/component"] in expression["values"]
    ]
    ports = {p["name"]: s for s in selected for p in s["spec"]["ports"]}
    assert {e["port"] for e in spec["endpoints"]} == set(ports) == {"http", "metrics"}
    # Each Service leads to pods that declare the port it names.
    targets = {
        (s["metadata"]["name"], p["targetPort"]) for s in selected for p in s["spec"]["ports"]
    }
    declared = set()
    for name in ("web", "worker", "watcher"):
        workload = component(objects, name)
        for port in pod_spec(workload)["containers"][0]["ports"]:
            declared |= {
                (s["metadata"]["name"], port["name"])
                for s in selected
                if s["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
            }
    assert targets == declared and len(targets) == 3
    endpoints = {e["port"]: e for e in spec["endpoints"]}
    assert {e["path"] for e in endpoints.values()} == {"/metrics"}
    # The web's wants the token, from the key the pods read METRICS_TOKEN from; the worker's
    # and watcher's want none, and get none.
    web_env = container_env(objects, component(objects, "web"))
    key = Path(web_env["METRICS_TOKEN_FILE"]).name
    assert endpoints["http"]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "portal-credentials", "key": key},
    }
    assert "authorization" not in endpoints["metrics"]
    renamed = merged(EVERYTHING, {"secrets": {"keys": {"metricsToken": "scrape"}}})
    (monitor,) = by_kind(helm.template(renamed), "ServiceMonitor").values()
    (web,) = [e for e in monitor["spec"]["endpoints"] if e["port"] == "http"]
    assert web["authorization"]["credentials"]["key"] == "scrape"


def test_worker_and_watcher_serve_metrics_on_the_ports_they_declare(helm):
    values = merged(EVERYTHING, {"metrics": {"workerPort": 9900, "watcherPort": 9901}})
    objects = helm.template(values)
    for name, variable, number in (
        ("worker", "WORKER_METRICS_PORT", 9900),
        ("watcher", "WATCHER_METRICS_PORT", 9901),
    ):
        workload = component(objects, name)
        env = container_env(objects, workload)
        (port,) = pod_spec(workload)["containers"][0]["ports"]
        assert (port["name"], port["containerPort"], env[variable]) == (
            "metrics",
            number,
            str(number),
        )
        # On every address of the pod (the portal's default), not only its loopback.
        assert "METRICS_LISTEN_ADDRESS" not in env
        (service,) = [
            s
            for s in by_kind(objects, "Service").values()
            if s["spec"].get("clusterIP") == "None"
            and s["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
        ]
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": number, "targetPort": "metrics", "protocol": "TCP"}
        ]
    # Without metrics, no port is declared and the processes open none.
    objects = helm.template(merged(REQUIRED, {"metrics": {"enabled": False}}))
    for name, variable in (("worker", "WORKER_METRICS_PORT"), ("watcher", "WATCHER_METRICS_PORT")):
        workload = component(objects, name)
        assert "ports" not in pod_spec(workload)["containers"][0]
        assert container_env(objects, workload).get(variable) == "0"


def test_prometheus_rule_alerts_on_the_monitored_jobs(helm):
    objects = helm.template(EVERYTHING, "portal", "research")
    (rule,) = by_kind(objects, "PrometheusRule").values()
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert set(alerts) == {
        "HubOnDemandWebDown",
        "HubOnDemandNoWorkers",
        "HubOnDemandQueueBacklog",
        "HubOnDemandHubsFailed",
        "HubOnDemandApprovalWaiting",
    }
    services = set(by_kind(objects, "Service"))
    for name in ("HubOnDemandWebDown", "HubOnDemandNoWorkers"):
        jobs = set(re.findall(r'job="([^"]+)"', alerts[name]["expr"]))
        # Prometheus names a ServiceMonitor's job after the Service.
        assert len(jobs) == 1 and jobs <= services, alerts[name]["expr"]
        assert 'namespace="research"' in alerts[name]["expr"]
    for alert in alerts.values():
        assert alert["labels"]["severity"] in ("critical", "warning", "info")
        assert alert["annotations"]["summary"]
    domain = [a["expr"] for a in alerts.values() if "hubondemand_" in a["expr"]]
    assert len(domain) == 3
    # Prometheus' own templates reach the rule unrendered by helm.
    assert "{{ $labels.queue }}" in alerts["HubOnDemandQueueBacklog"]["annotations"]["summary"]
    assert "> 100" in alerts["HubOnDemandQueueBacklog"]["expr"]
    waiting = alerts["HubOnDemandApprovalWaiting"]
    assert "max by (kind) (" in waiting["expr"] and waiting["expr"].endswith(" > 172800")
    assert "{{ $labels.kind }}" in waiting["annotations"]["summary"]
    extra = {"alert": "Custom", "expr": "vector(1)"}
    values = merged(EVERYTHING, {"metrics": {"prometheusRule": {"extraRules": [extra]}}})
    (rule,) = by_kind(helm.template(values), "PrometheusRule").values()
    assert rule["spec"]["groups"][0]["rules"][-1] == extra


# --- The metrics alerts read ---------------------------------------------------------------------

# PromQL's keywords: identifiers in an expression that name no metric.
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# Labels Prometheus gives each series from the target it scraped (the ServiceMonitor's), not
# the portal.
TARGET_LABELS = {"namespace", "job", "instance", "pod", "service", "endpoint", "container"}
# The series names a metric family of each type stands for (created series are disabled).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "info": ("_info",),
}
_STRING = r'"(?:[^"\\]|\\.)*"'
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(rf"([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*({_STRING})")
_IDENTIFIER = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """The metrics a PromQL expression reads, each with its equality matchers (label: value).

    Enough PromQL for alert rules: selectors with or without braces, functions, aggregations
    with by/without, binary operators with on/ignoring, range and offset durations."""
    selectors = []
    for name, body in _SELECTOR.findall(expr):
        matchers = {
            label: yaml.safe_load(value) for label, op, value in _MATCHER.findall(body) if op == "="
        }
        selectors.append((name or matchers.pop("__name__", ""), matchers))
    bare = re.sub(_STRING, '""', expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    with_braces = {name for name, _ in selectors}
    for name in _IDENTIFIER.findall(bare):
        if name not in PROMQL_WORDS and name not in with_braces:
            selectors.append((name, {}))
    return selectors


def exported_series(*scrapes: str) -> dict[str, list[dict[str, str]]]:
    """Series name -> the label sets of its samples, in scrapes in the Prometheus text format.
    A family without samples (a labelled counter nothing incremented yet) still names its
    series, through the `# TYPE` line."""
    series: dict[str, list[dict[str, str]]] = {}
    for text in scrapes:
        for family in text_string_to_metric_families(text):
            for suffix in SERIES_SUFFIXES.get(family.type, ("",)):
                series.setdefault(family.name + suffix, [])
            for sample in family.samples:
                series.setdefault(sample.name, []).append(sample.labels)
    return series


def unknown_to_the_portal(expr: str, series: dict[str, list[dict[str, str]]]) -> list[str]:
    """What `expr` reads that the portal does not export: a metric name, or a label value that
    none of the metric's samples has (checked where the scrape has samples of it)."""
    problems = []
    for name, matchers in metric_selectors(expr):
        if name == "up":  # Prometheus' own, one per target
            continue
        if name not in series:
            problems.append(name)
            continue
        wanted = {k: v for k, v in matchers.items() if k not in TARGET_LABELS}
        if wanted and series[name] and not any(wanted.items() <= s.items() for s in series[name]):
            problems.append(f"{name}{wanted}")
    return problems


@pytest.fixture
def portal_series(db, settings, monkeypatch) -> dict[str, list[dict[str, str]]]:
    """What the portal exports: a scrape of the web's /metrics (with its token, every part of
    the domain read: PostgreSQL and Redis answer) and of the worker's and watcher's endpoint
    (exposition.registry, what exposition.serve serves)."""
    from portal.monitoring import exposition

    settings.METRICS_TOKEN = "chart-test-" + "m" * 32
    monkeypatch.setenv("CELERY_BROKER_URL", redis_url_for_this_worker())
    response = Client().get(
        "/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}", HTTP_HOST="10.244.0.7"
    )
    assert response.status_code == 200, response.content
    web = response.content.decode()
    worker, _ = exposition.render()
    sections = {
        sample.labels["section"]: sample.value
        for family in text_string_to_metric_families(web)
        if family.name == "hubondemand_metrics_section_up"
        for sample in family.samples
    }
    assert sections and set(sections.values()) == {1.0}, f"parts left out: {sections}"
    return exported_series(web, worker.decode())


def test_every_metric_an_alert_reads_is_one_the_portal_exports(helm, portal_series):
    objects = helm.template(EVERYTHING, "portal", "research")
    (rule,) = by_kind(objects, "PrometheusRule").values()
    (group,) = rule["spec"]["groups"]
    read = set()
    for alert in group["rules"]:
        unknown = unknown_to_the_portal(alert["expr"], portal_series)
        assert not unknown, f"{alert['alert']} reads what the portal does not export: {unknown}"
        read |= {name for name, _ in metric_selectors(alert["expr"])}
    assert read == {
        "up",
        "hubondemand_celery_queue_length",
        "hubondemand_hubs",
        "hubondemand_oldest_pending_approval_age_seconds",
    }
    # The check catches a renamed metric, a label value the portal never sets, and a counter
    # or histogram read under its family's name.
    assert unknown_to_the_portal(
        'max(hubondemand_pending_approval_oldest_age_seconds{namespace="x"}) > 1'
        ' or max(hubondemand_hubs{state="broken"}) > 0'
        " or rate(hubondemand_celery_tasks[5m]) > 0"
        " or histogram_quantile(0.9, sum by (le) ("
        "rate(hubondemand_celery_task_duration_seconds[5m])))",
        portal_series,
    ) == [
        "hubondemand_pending_approval_oldest_age_seconds",
        "hubondemand_hubs{'state': 'broken'}",
        "hubondemand_celery_tasks",
        "hubondemand_celery_task_duration_seconds",
    ]


# --- What the chart refuses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"beat": {"replicas": 2}}, "/beat/replicas"),
        ({"beat": {"replicas": 0}}, "/beat/replicas"),
        ({"secrets": {"existingSecret": ""}}, "/secrets/existingSecret"),
        ({"secrets": {"existingSecret": "Not_A_Name"}}, "/secrets/existingSecret"),
        ({"secrets": {"keys": {"secretKey": "a key"}}}, "/secrets/keys/secretKey"),
        ({"portal": {"url": "portal.example.org"}}, "/portal/url"),
        ({"hubs": {"domain": ""}}, "/hubs/domain"),
        ({"hubs": {"egress": "closed"}}, "/hubs/egress"),
        ({"hubs": {"deniedEgress": ["10.0.0.1"]}}, "/hubs/deniedEgress/0"),
        ({"watcher": {"replicas": 3}}, "/watcher/replicas"),
        ({"worker": {"queues": ["celery"]}}, "/worker/queues"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"email": {"useTls": True, "useSsl": True}}, "/email"),
        ({"networkPolicy": {"egress": "open"}}, "/networkPolicy/egress"),
        ({"metrics": {"workerPort": 70000}}, "/metrics/workerPort"),
        ({"web": {"readinessChecks": ["etcd"]}}, "/web/readinessChecks/0"),
        ({"web": {"readinessChecks": ["broker", "broker"]}}, "/web/readinessChecks"),
        ({"extraEnv": [{"value": "no name"}]}, "/extraEnv/0"),
        ({"ingres": {"enabled": True}}, "ingres"),
        ({"web": {"replica": 3}}, "replica"),
    ],
)
def test_schema_rejects_bad_values(helm, change, message):
    result = helm.run(
        "template", "portal", str(CHART), values=merged(REQUIRED, change), check=False
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "missing", ["portal.url", "hubs.domain", "secrets.existingSecret"], ids=lambda m: m
)
def test_required_values(helm, missing):
    section, key = missing.split(".")
    values = merged(REQUIRED, {section: {key: ""}})
    result = helm.run("template", "portal", str(CHART), values=values, check=False)
    assert result.returncode != 0 and missing.split(".")[1] in result.stderr


def test_template_errors_name_the_value(helm):
    cases = [
        ({"serviceAccount": {"create": False}}, "serviceAccount.name"),
        ({"oidc": {"issuer": "https://idp.example.org"}}, "oidc.clientId"),
        ({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}, "metrics.enabled"),
    ]
    for change, message in cases:
        result = helm.run(
            "template", "portal", str(CHART), values=merged(REQUIRED, change), check=False
        )
        assert result.returncode != 0 and message in result.stderr, (change, result.stderr)


def test_values_file_and_schema_agree(helm):
    """Every key of values.yaml is described by the schema (which refuses unknown keys), and
    values.yaml with only the required values set passes it: checked by rendering it."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())

    def walk(node: dict, described: dict, path: str) -> None:
        properties = described.get("properties")
        if properties is None:
            return
        for key, value in node.items():
            assert key in properties, f"{path}{key} is not in values.schema.json"
            if isinstance(value, dict):
                walk(value, properties[key], f"{path}{key}.")

    walk(values, schema, "")
    assert schema["additionalProperties"] is False
    helm.template(REQUIRED)


def test_readme_documents_the_values_and_secret_keys():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deploy on Kubernetes", 1)[1].split("\n## ", 1)[0]
    for required in ("portal.url", "hubs.domain", "secrets.existingSecret", "image.repository"):
        assert f"`{required}`" in section, required
    (readiness,) = [line for line in section.splitlines() if line.startswith("| `web.readiness")]
    assert "API server" in readiness and "`READINESS_CHECKS`" in readiness
    for key in ALL_SECRET_KEYS.values():
        assert f"`{key}`" in section, key
    assert "pre-upgrade" in section and "helm rollback" in section
    assert "devcluster/scripts/helm.sh" in section
    assert Path(REPO / "devcluster/scripts/helm.sh").stat().st_mode & 0o111
