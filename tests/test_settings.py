"""Settings from the environment, and the Celery app's configuration."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal import settings as portal_settings
from portal.celery import app

REPO = Path(__file__).resolve().parent.parent


def load(env: dict[str, str], expr: str) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter with exactly this environment."""
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "-c", f"import portal.settings as s; print({expr})"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_secret_key_required_without_debug():
    result = load({}, "s.SECRET_KEY")
    assert result.returncode != 0
    assert "ImproperlyConfigured: Set SECRET_KEY (or SECRET_KEY_FILE)" in result.stderr


def test_debug_has_a_development_key():
    result = load({"DEBUG": "1"}, "s.SECRET_KEY, s.DEBUG")
    assert result.returncode == 0, result.stderr
    assert "django-insecure" in result.stdout and "True" in result.stdout


def test_secret_from_file(tmp_path):
    secret = tmp_path / "key"
    secret.write_text("s3cr3t-from-file\n")
    result = load({"SECRET_KEY_FILE": str(secret)}, "s.SECRET_KEY")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "s3cr3t-from-file"


def test_defaults():
    result = load(
        {"SECRET_KEY": "x"},
        "s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.CELERY_BROKER_URL, "
        "s.HUBS_DOMAIN, s.DEBUG, s.ALLOWED_HOSTS",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"django_prometheus.db.backends.sqlite3 {REPO / 'db.sqlite3'} redis://127.0.0.1:6379/0 "
        "hubs.localhost False ['localhost', '127.0.0.1', '[::1]']"
    )


def test_environment_overrides():
    result = load(
        {
            "SECRET_KEY": "x",
            "DATABASE_URL": "postgres://u:p@db.example:5433/portal",
            "REDIS_URL": "redis://cache:6379/2",
            "HUBS_DOMAIN": "hubs.example.org",
            "ALLOWED_HOSTS": "portal.example.org, localhost",
            "KUBECONFIG": "/etc/kube/config",
        },
        "s.DATABASES['default']['ENGINE'], s.DATABASES['default']['HOST'], s.CELERY_BROKER_URL, "
        "s.HUBS_DOMAIN, s.ALLOWED_HOSTS, s.KUBECONFIG",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "django_prometheus.db.backends.postgresql db.example redis://cache:6379/2 hubs.example.org "
        "['portal.example.org', 'localhost'] /etc/kube/config"
    )


def test_operations_defaults_and_overrides(tmp_path):
    expr = (
        "repr(s.METRICS_TOKEN), s.WORKER_METRICS_PORT, s.WATCHER_METRICS_PORT, "
        "s.READINESS_CHECKS, s.LOG_FORMAT, "
        "s.DATABASES['default']['OPTIONS'].get('connect_timeout')"
    )
    defaults = load({"SECRET_KEY": "x", "DATABASE_URL": "postgres://db.example/portal"}, expr)
    assert defaults.returncode == 0, defaults.stderr
    assert defaults.stdout.split() == [
        "''", "9808", "9809", "['database',", "'broker',", "'kubernetes']", "json", "5",
    ]  # fmt: skip
    assert load({"DEBUG": "1"}, "s.LOG_FORMAT").stdout.strip() == "console"

    token = tmp_path / "metrics-token"
    token.write_text("from-a-file\n")
    changed = load(
        {
            "SECRET_KEY": "x",
            "METRICS_TOKEN_FILE": str(token),
            "WORKER_METRICS_PORT": "0",
            "READINESS_CHECKS": "database,broker",
            "LOG_FORMAT": "console",
        },
        "s.METRICS_TOKEN, s.WORKER_METRICS_PORT, s.READINESS_CHECKS, s.LOG_FORMAT",
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "from-a-file 0 ['database', 'broker'] console"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOG_FORMAT", "xml"),
        ("READINESS_CHECKS", "database,smtp"),
        ("WORKER_METRICS_PORT", "70000"),
        ("HEALTH_MAX_AGE_SECONDS", "5"),
        ("HUB_API_CONNECT_TO", "ingress-nginx-controller.ingress-nginx.svc"),
        ("HUB_API_CONNECT_TO", "https://10.96.0.11:443"),
    ],
)
def test_operations_settings_refuse_nonsense(name, value):
    result = load({"SECRET_KEY": "x", name: value}, "s.DEBUG")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and name in result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"HUB_PORTAL_ROLE": "portal-hub-namespace"},
        {"HUB_PORTAL_ACCOUNT": "portal/hub-on-demand"},
        {"HUB_PORTAL_ROLE": "portal-hub-namespace", "HUB_PORTAL_ACCOUNT": "hub-on-demand"},
    ],
)
def test_the_portals_role_and_account_come_together_and_the_account_names_its_namespace(env):
    result = load({"SECRET_KEY": "x", **env}, "s.DEBUG")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "HUB_PORTAL_ACCOUNT" in result.stderr


def test_kubeconfig_falls_back_to_devcluster_then_in_cluster(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setattr(portal_settings, "BASE_DIR", tmp_path)
    assert portal_settings._default_kubeconfig() is None  # in-cluster configuration
    (tmp_path / ".devcluster").mkdir()
    (tmp_path / ".devcluster" / "kubeconfig").write_text("apiVersion: v1\n")
    assert portal_settings._default_kubeconfig() == str(tmp_path / ".devcluster" / "kubeconfig")


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("yes", True), ("off", False), ("", False)]
)
def test_env_bool(monkeypatch, raw, expected):
    monkeypatch.setenv("SOME_FLAG", raw)
    assert portal_settings.env_bool("SOME_FLAG") is expected


def test_env_bool_and_int_refuse_garbage(monkeypatch):
    monkeypatch.setenv("SOME_FLAG", "perhaps")
    monkeypatch.setenv("SOME_NUMBER", "ten")
    with pytest.raises(ImproperlyConfigured):
        portal_settings.env_bool("SOME_FLAG")
    with pytest.raises(ImproperlyConfigured):
        portal_settings.env_int("SOME_NUMBER", 1)


def test_celery_app_configuration():
    assert app.main == "portal"
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_url == portal_settings.REDIS_URL
    route = app.amqp.router.route({}, "portal.hubs.tasks.provision_hub")
    assert route["queue"].name == "provisioning"
    assert app.amqp.router.route({}, "portal.hubs.tasks.run_expiry")["queue"].name == "celery"
    assert app.amqp.router.route({}, "portal.other")["queue"].name == "celery"
