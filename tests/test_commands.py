"""createapitoken and seeddemo."""

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db
User = get_user_model()


def run(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **kwargs)
    return out.getvalue().strip()


def status_with(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/v1/hubs/").status_code


def test_createapitoken_creates_user_and_prints_working_token():
    token = run("createapitoken", "robot")
    assert re.fullmatch(r"hod_[0-9a-f]{8}[A-Za-z0-9_-]{43}", token)
    user = User.objects.get(username="robot")
    assert not user.is_staff and not user.has_usable_password()
    assert status_with(token) == 200


def test_createapitoken_prints_a_new_token_each_time(alice):
    first = run("createapitoken", "alice")
    second = run("createapitoken", "alice")
    assert first != second
    assert status_with(second) == 200
    assert status_with(first) == 401  # the old one no longer works
    assert User.objects.filter(username="alice").count() == 1


def test_createapitoken_admin(hub):
    token = run("createapitoken", "operator", "--admin")
    user = User.objects.get(username="operator")
    assert user.is_staff
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.post(f"/api/v1/hubs/{hub.pk}/approve/", {}, format="json").status_code == 200


def test_seeddemo_with_given_passwords_is_idempotent(client, monkeypatch):
    monkeypatch.setenv("DEMO_RESEARCHER_PASSWORD", "from-the-env-123")
    for _ in range(2):
        output = run("seeddemo", "--admin-password", "admin-pass-123")
    assert "admin-pass-123" in output and "from-the-env-123" in output
    assert User.objects.filter(username__in=["admin", "researcher"]).count() == 2
    assert User.objects.get(username="admin").is_staff
    assert not User.objects.get(username="researcher").is_staff
    assert client.login(username="admin", password="admin-pass-123")
    assert client.login(username="researcher", password="from-the-env-123")


def test_seeddemo_generates_passwords(client, monkeypatch):
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("DEMO_RESEARCHER_PASSWORD", raising=False)
    output = run("seeddemo")
    passwords = dict(re.findall(r"username: (\w+)\s+password: (\S+)", output))
    assert set(passwords) == {"admin", "researcher"}
    assert passwords["admin"] != passwords["researcher"]
    assert client.login(username="researcher", password=passwords["researcher"])


def test_seeddemo_adds_a_demo_price_list_once_and_keeps_an_admins(client):
    from portal.usage.models import PriceList

    output = run("seeddemo")
    assert "Demo price list created" in output
    prices = PriceList.objects.get()
    assert prices.cpu_hour > 0 and prices.gpu_prices.count() >= 1
    prices.cpu_hour = 7
    prices.save()

    assert "Demo price list" not in run("seeddemo")
    assert PriceList.objects.get().cpu_hour == 7
