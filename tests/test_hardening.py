"""Hardening: a clean `check --deploy`, security headers and CSP, CSRF on every form, no inline
scripts or styles, rate limits on sign-in and API writes, and secrets kept out of logs and
answers."""

import logging
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from portal.hubs import members
from portal.hubs.models import Hub
from tests.factories import api_token
from tests.support import delete_namespaces

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
# E-mails are not served by the portal, so the page policy does not apply to them.
PAGE_TEMPLATES = sorted(p for p in TEMPLATES.rglob("*.html") if "emails" not in p.parts)
PRODUCTION = {
    "SECRET_KEY": "k3-" + "9fQx2vLr7TbZpW4sNc8YhMd6JeUa1GoKiRyXtBnVm5Hq0CwEzPlSjDgAfI",
    "ALLOWED_HOSTS": "portal.example.org",
    "SECURE_COOKIES": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "BEHIND_TLS_PROXY": "true",
}


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run manage.py in a fresh interpreter with exactly this environment (plus PATH/HOME)."""
    clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings():
    result = manage(PRODUCTION, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_catches_insecure_cookies():
    """The check above has teeth: without secure cookies and HSTS it warns."""
    insecure = {**PRODUCTION, "SECURE_COOKIES": "false", "SECURE_HSTS_SECONDS": "0"}
    result = manage(insecure, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "security.W004" in result.stderr and "security.W012" in result.stderr


def test_production_settings_values():
    expr = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT, "
        "s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.X_FRAME_OPTIONS, "
        "s.SECURE_REFERRER_POLICY, s.SESSION_COOKIE_HTTPONLY)"
    )
    result = manage(PRODUCTION, "shell", "--no-imports", "-c", expr)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "True",
        "True",
        "True",
        "31536000",
        "True",
        "DENY",
        "same-origin",
        "True",
    ]


@pytest.mark.parametrize(
    ("env", "backend"),
    [
        ({}, "django.core.cache.backends.locmem.LocMemCache"),
        ({"REDIS_URL": "redis://cache:6379/1"}, "django.core.cache.backends.redis.RedisCache"),
        ({"CACHE_URL": "redis://cache:6379/3"}, "django.core.cache.backends.redis.RedisCache"),
    ],
)
def test_cache_is_redis_when_configured(env, backend):
    expr = "from django.conf import settings as s; print(s.CACHES['default']['BACKEND'])"
    result = manage({"SECRET_KEY": "x", **env}, "shell", "--no-imports", "-c", expr)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == backend


# --- Headers ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_security_headers_on_pages(client, alice, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    client.force_login(alice)
    response = client.get(reverse("hubs:list"), secure=True)
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";") if part.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert "unsafe-inline" not in csp and directives["frame-ancestors"] == "'none'"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Strict-Transport-Security"].startswith("max-age=3600")


@pytest.mark.django_db
def test_api_answers_carry_the_headers_too(alice):
    api = APIClient()
    api.force_authenticate(alice)
    response = api.get("/api/v1/hubs/")
    assert "Content-Security-Policy" in response and response["X-Frame-Options"] == "DENY"


# --- CSRF and inline code -----------------------------------------------------------------------

FORM = re.compile(r"<form\b([^>]*)>(.*?)</form>", re.S | re.I)


@pytest.mark.parametrize("template", PAGE_TEMPLATES, ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_every_post_form_has_a_csrf_token(template):
    for attributes, body in FORM.findall(template.read_text()):
        if re.search(r"method\s*=\s*[\"']?post", attributes, re.I):
            assert "{% csrf_token %}" in body, f"a POST form without csrf_token in {template}"


def test_the_form_scan_finds_forms():
    """The scan above is not vacuous: the templates do have POST forms."""
    posts = [
        attrs
        for template in PAGE_TEMPLATES
        for attrs, _ in FORM.findall(template.read_text())
        if "post" in attrs.lower()
    ]
    assert len(posts) >= 10


INLINE = [
    (re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"<style\b", re.I), "a <style> block"),
    (re.compile(r"\sstyle\s*=", re.I), "a style= attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "an on…= event handler"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
]


@pytest.mark.parametrize("template", PAGE_TEMPLATES, ids=lambda p: str(p.relative_to(TEMPLATES)))
def test_no_inline_scripts_or_styles(template):
    text = template.read_text()
    for pattern, what in INLINE:
        # json_script's <script type="application/json"> is data, not code.
        found = [m for m in pattern.findall(text) if "application/json" not in m]
        assert not found, f"{template.relative_to(TEMPLATES)} has {what}: {found[:1]}"


@pytest.mark.django_db
def test_a_post_without_csrf_token_is_refused(alice, spec, queued):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("hubs:create"), spec())
    assert response.status_code == 403
    assert not alice.hubs.exists()
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(alice)
    response = api.post("/api/v1/tokens/", {"name": "x"}, format="json")
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]


@pytest.mark.django_db
def test_token_calls_need_no_csrf_token(alice):
    api = APIClient(enforce_csrf_checks=True)
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(alice)}")
    assert api.post("/api/v1/tokens/", {"name": "x"}, format="json").status_code == 201


# --- Rate limits --------------------------------------------------------------------------------


def keys_in_redis(redis_client, pattern: str) -> dict[bytes, int]:
    """The keys of this test's cache prefix matching `pattern`, with their time to live."""
    from django.conf import settings as live

    prefix = live.CACHES["default"]["KEY_PREFIX"]
    return {key: redis_client.ttl(key) for key in redis_client.keys(f"{prefix}:*{pattern}*")}


@pytest.mark.django_db
def test_login_is_rate_limited_per_ip_and_username(client, alice, settings, rate_limit_cache):
    settings.LOGIN_RATE_LIMIT_ATTEMPTS = 3
    url = reverse("login")
    wrong = {"username": "alice", "password": "wrong"}
    for _ in range(3):
        assert client.post(url, wrong, REMOTE_ADDR="192.0.2.1").status_code == 200
    response = client.post(url, wrong, REMOTE_ADDR="192.0.2.1")
    assert response.status_code == 429
    assert "Too many attempts" in response.content.decode()
    assert int(response["Retry-After"]) == settings.LOGIN_RATE_LIMIT_WINDOW
    # Even the right password waits now, so guessing cannot go on.
    right = {"username": "alice", "password": "correct horse battery staple"}
    assert client.post(url, right, REMOTE_ADDR="192.0.2.1").status_code == 429
    # Another address, or another username, is not affected.
    assert client.post(url, right, REMOTE_ADDR="192.0.2.2").status_code == 302
    other = {"username": "bob", "password": "wrong"}
    assert client.post(url, other, REMOTE_ADDR="192.0.2.1").status_code == 200
    if rate_limit_cache is not None:
        # Counted in Redis, where every web process sees them, for the window and no longer;
        # the username is hashed into the key, never stored in clear.
        counted = keys_in_redis(rate_limit_cache, "sign-in-fail:")
        assert len(counted) == 2, counted  # alice and bob from 192.0.2.1
        assert all(0 < ttl <= settings.LOGIN_RATE_LIMIT_WINDOW for ttl in counted.values())
        assert not any(b"alice" in key or b"bob" in key for key in counted)


@pytest.mark.django_db
def test_successful_logins_do_not_count(client, alice, settings, client_address):
    settings.LOGIN_RATE_LIMIT_ATTEMPTS = 2
    right = {"username": "alice", "password": "correct horse battery staple"}
    address = client_address()
    for _ in range(4):
        assert client.post(reverse("login"), right, REMOTE_ADDR=address).status_code == 302
        client.logout()


@pytest.mark.django_db
def test_api_writes_are_throttled_reads_are_not(alice, settings, rate_limit_cache):
    settings.API_WRITE_RATE = "2/min"
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(alice)}")
    for name in ("a", "b"):
        assert api.post("/api/v1/tokens/", {"name": name}, format="json").status_code == 201
    response = api.post("/api/v1/tokens/", {"name": "c"}, format="json")
    assert response.status_code == 429
    assert "throttled" in response.json()["detail"] and "Retry-After" in response
    assert not alice.api_tokens.filter(name="c").exists()
    for _ in range(5):
        assert api.get("/api/v1/tokens/").status_code == 200
    if rate_limit_cache is not None:
        # DRF's history of alice's writes, in Redis for the rate's minute.
        (ttl,) = keys_in_redis(rate_limit_cache, f"throttle_api-write_{alice.pk}").values()
        assert 0 < ttl <= 60


# --- Secrets never in logs or answers -----------------------------------------------------------


@pytest.mark.django_db
def test_secrets_stay_out_of_logs_and_answers(
    client, alice, bob, charlie, payload, queued, settings, caplog
):
    """Drive the main flows with every log captured, then look for the secrets everywhere
    except the one answer that shows a new token or invitation link once."""
    settings.SECRET_KEY = "sk-" + secrets.token_hex(32)  # before any session is signed
    settings.OIDC_CLIENT_SECRET = "oidc-client-" + secrets.token_hex(16)
    settings.SOCIAL_AUTH_GITHUB_SECRET = "github-client-" + secrets.token_hex(16)
    caplog.set_level(logging.DEBUG)
    bodies: list[str] = []
    shown_once: list[str] = []

    def keep(response) -> None:
        bodies.append(response.content.decode(errors="replace"))

    # Tokens: through the page and the API.
    client.force_login(alice)
    response = client.post(reverse("tokens:list"), {"name": "cli", "scope": "write"})
    page_token = re.search(r"hod_[0-9a-f]{8}[\w-]{43}", response.content.decode()).group(0)
    shown_once.append(page_token)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {page_token}")
    response = api.post("/api/v1/tokens/", {"name": "ci", "scope": "read"}, format="json")
    api_made = response.json()["token"]
    shown_once.append(api_made)

    # A hub: requested, approved, looked at, changed.
    response = api.post("/api/v1/hubs/", payload(expected_users=500), format="json")
    keep(response)
    hub_id = response.json()["id"]
    admin = APIClient()
    admin.credentials(HTTP_AUTHORIZATION=f"Token {api_token(charlie)}")
    keep(admin.post(f"/api/v1/hubs/{hub_id}/approve/", {}, format="json"))
    for url in ("/api/v1/hubs/", f"/api/v1/hubs/{hub_id}/", "/api/v1/tokens/", "/api/schema/"):
        keep(api.get(url))
    keep(admin.get("/api/v1/audit/"))
    for name, args in [("hubs:list", []), ("hubs:detail", [hub_id]), ("tokens:list", [])]:
        keep(client.get(reverse(name, args=args)))
    client.force_login(charlie)
    keep(client.get(reverse("audit:list")))
    keep(client.get(reverse("hubs:queue")))
    keep(client.get(reverse("admin:index")))

    # An invitation: its token is shown once, to the inviter, and never again.
    hub = Hub.objects.get(pk=hub_id)
    invited = members.invite(hub, alice, {"email": "dana@example.org", "role": "member"})
    shown_once.append(invited.token)
    keep(client.get(reverse("hubs:detail", args=[hub_id])))
    keep(admin.get("/api/v1/audit/"))

    # Bad calls log too: a wrong token and a failed sign-in.
    keep(APIClient(HTTP_AUTHORIZATION=f"Token {page_token}x").get("/api/v1/hubs/"))
    keep(Client().post(reverse("login"), {"username": "alice", "password": page_token}))

    from django.conf import settings as live

    from portal.audit.models import AuditEvent

    logs = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    audit = str(list(AuditEvent.objects.values()))
    assert len(bodies) >= 12 and caplog.records and AuditEvent.objects.exists()
    for secret in [
        *shown_once,
        live.SECRET_KEY,
        settings.OIDC_CLIENT_SECRET,
        settings.SOCIAL_AUTH_GITHUB_SECRET,
    ]:
        assert secret not in logs, f"a secret in the logs: {secret[:8]}…"
        assert secret not in audit, f"a secret in the audit log: {secret[:8]}…"
        for body in bodies:
            assert secret not in body, f"a secret in an answer: {secret[:8]}…"


@pytest.mark.cluster
def test_hub_secrets_stay_out_of_provisioning_logs(kube_api, caplog):
    """Apply a hub to the real control plane twice (create, then re-apply with the secrets it
    has) with every log captured; the generated secrets must not appear in them."""
    import base64
    import dataclasses

    from provisioning import k8s
    from provisioning.render import SECRET_NAME, RenderSettings
    from provisioning.sync import sync_hub
    from tests.provisioning.examples import EXAMPLES

    example = EXAMPLES["cpu-course"]
    spec = dataclasses.replace(
        example, slug=f"secrets-{secrets.token_hex(3)}", hub_id=secrets.randbelow(10**9)
    )
    caplog.set_level(logging.DEBUG)
    try:
        sync_hub(kube_api, spec, RenderSettings())
        sync_hub(kube_api, spec, RenderSettings())
        stored = k8s.get(kube_api, "Secret", SECRET_NAME, spec.namespace)
    finally:
        delete_namespaces(kube_api, spec)
    values = [base64.b64decode(v).decode() for v in stored["data"].values()]
    assert len(values) >= 3 and all(len(v) >= 32 for v in values)
    logs = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for value in values:
        assert value not in logs and base64.b64encode(value.encode()).decode() not in logs
