"""Operating the web process: /healthz, /readyz and /metrics as probes and Prometheus call them,
the domain metrics read from the database (and the broker's queues), and the request context
every JSON log line carries.

All against the real PostgreSQL and Redis; the Kubernetes check's failure uses the real client
against a closed port (its success is in tests/cluster/test_probes.py).
"""

from __future__ import annotations

import datetime
import io
import json
import logging
from decimal import Decimal

import pytest
import redis
import structlog
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from portal import logconfig
from portal.hubs import lifecycle
from portal.hubs.lifecycle import HubState, RevisionState
from portal.hubs.models import GpuType, HubEvent
from portal.usage.models import CollectionPass, GpuInventory, UsageDay
from tests.factories import HubFactory, UserFactory, api_token
from tests.support import free_port, redis_url_for_this_worker, use_current_broker
from tests.usage_support import price_list

pytestmark = pytest.mark.django_db

TOKEN = "metrics-" + "x" * 32
# Kubernetes probes and Prometheus call the pod's address, not the portal's domain.
POD = {"HTTP_HOST": "10.244.1.17:8000"}


@pytest.fixture(autouse=True)
def production_hosts(settings):
    """A portal on a real domain behind TLS: pages at the pod's address are refused."""
    settings.ALLOWED_HOSTS = ["portal.example.org"]
    settings.METRICS_TOKEN = TOKEN


def scrape(**headers) -> dict[tuple[str, tuple], float]:
    """One scrape of /metrics, as (sample name, sorted labels) -> value."""
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **POD, **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# --- /healthz and /readyz -------------------------------------------------------------------


def test_healthz_answers_at_the_pods_address_without_the_database(
    settings, django_assert_num_queries
):
    settings.SECURE_SSL_REDIRECT = True  # a page over plain HTTP is redirected...
    client = Client()
    assert client.get("/accounts/login/", HTTP_HOST="portal.example.org").status_code == 301
    assert client.get("/accounts/login/", **POD).status_code == 400  # ...and needs the domain
    with django_assert_num_queries(0):
        response = client.get("/healthz", **POD)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert client.post("/healthz", **POD).status_code == 405


def test_readyz_is_ready_when_the_database_and_the_broker_answer(settings):
    settings.READINESS_CHECKS = ["database", "broker"]
    response = Client().get("/readyz", **POD)
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_names_the_broker_when_it_does_not_answer(settings, monkeypatch):
    settings.READINESS_CHECKS = ["database", "broker"]
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://:br0ker-s3cret@127.0.0.1:{free_port()}/0")
    response = Client().get("/readyz", **POD)
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "unavailable"},
        "failed": ["broker"],
    }
    assert b"br0ker-s3cret" not in response.content and b"127.0.0.1" not in response.content


def test_readyz_names_the_kubernetes_api_when_it_does_not_answer(settings, tmp_path):
    """The real Kubernetes client, pointed at a port where no API server listens."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "gone",
                        "cluster": {"server": f"https://127.0.0.1:{free_port()}"},
                    }
                ],
                "users": [{"name": "portal", "user": {"token": "kube-t0ken-s3cret"}}],
                "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "portal"}}],
                "current-context": "gone",
            }
        )
    )
    settings.KUBECONFIG = str(kubeconfig)
    response = Client().get("/readyz", **POD)
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["kubernetes"]
    assert body["checks"] == {"database": "ok", "broker": "ok", "kubernetes": "unavailable"}
    assert b"s3cret" not in response.content and b"Traceback" not in response.content


# --- /metrics: who may scrape ---------------------------------------------------------------


def test_metrics_is_not_there_without_a_token_set(settings):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics", **POD).status_code == 404
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ", **POD).status_code == 404


def test_metrics_wants_the_token(settings):
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    missing = client.get("/metrics", **POD)
    assert missing.status_code == 401
    assert missing["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Token {TOKEN}", **POD).status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}x", **POD)
    assert wrong.status_code == 403
    assert TOKEN.encode() not in wrong.content
    # Right token: served at the pod's address over plain HTTP, whatever ALLOWED_HOSTS says.
    samples = scrape()
    assert value(samples, "hubondemand_hubs", state="running") == 0


def test_metrics_speak_openmetrics_when_asked():
    response = Client().get(
        "/metrics",
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        HTTP_ACCEPT="application/openmetrics-text; version=1.0.0",
        **POD,
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


def test_http_and_database_metrics_count_requests():
    def requests_counted() -> float:
        return value(scrape(), "django_http_responses_total_by_status_total", status="200") or 0.0

    before = requests_counted()
    for _ in range(3):
        assert Client().get("/accounts/login/", HTTP_HOST="portal.example.org").status_code == 200
    assert requests_counted() == before + 3
    samples = scrape()
    assert value(samples, "django_db_execute_total", alias="default", vendor="postgresql") > 0


# --- /metrics: the portal's state -----------------------------------------------------------


@pytest.fixture
def a100() -> GpuType:
    return GpuType.objects.get(name="a100")


def test_domain_metrics_follow_the_database(a100):
    today = timezone.localdate()
    empty = scrape()
    for state in HubState.values:
        assert value(empty, "hubondemand_hubs", state=state) == 0, state
    assert value(empty, "hubondemand_pending_approvals", kind="hub") == 0
    assert value(empty, "hubondemand_oldest_pending_approval_age_seconds", kind="hub") == 0
    assert value(empty, "hubondemand_hubs_expiring_within_14_days") == 0
    assert value(empty, "hubondemand_usage_last_pass_timestamp_seconds") == 0

    waiting = HubFactory(state=HubState.PENDING)
    waiting_since = timezone.now() - datetime.timedelta(hours=2)
    type(waiting).objects.filter(pk=waiting.pk).update(state_changed=waiting_since)
    HubFactory(state=HubState.PENDING)
    gpu_hub = HubFactory(
        state=HubState.RUNNING,
        start_date=today - datetime.timedelta(days=3),
        end_date=today + datetime.timedelta(days=5),
        gpu_type=a100,
        gpus_per_user=1,
        expected_users=3,
    )
    HubFactory(state=HubState.EXPIRING, end_date=today + datetime.timedelta(days=14))
    HubFactory(state=HubState.RUNNING, end_date=today + datetime.timedelta(days=40))
    HubFactory(
        state=HubState.SUSPENDED,
        start_date=today - datetime.timedelta(days=30),
        end_date=today - datetime.timedelta(days=2),
    )
    # Approved, with GPUs from tomorrow: nothing reserved today.
    HubFactory(state=HubState.APPROVED, gpu_type=a100, gpus_per_user=2, expected_users=2)
    lifecycle.create_revision(
        hub=gpu_hub, number=2, spec={}, state=RevisionState.PENDING, author=gpu_hub.owner,
        created=timezone.now() - datetime.timedelta(minutes=30),
    )  # fmt: skip
    GpuInventory.objects.create(
        product=a100.node_label_value, allocatable=8, in_use=2, observed=timezone.now()
    )
    CollectionPass.objects.create(at=timezone.now(), duration_seconds=1.5)

    samples = scrape()
    assert value(samples, "hubondemand_hubs", state="pending") == 2
    assert value(samples, "hubondemand_hubs", state="running") == 2
    assert value(samples, "hubondemand_hubs", state="approved") == 1
    assert value(samples, "hubondemand_pending_approvals", kind="hub") == 2
    assert value(samples, "hubondemand_pending_approvals", kind="change") == 1
    hub_age = value(samples, "hubondemand_oldest_pending_approval_age_seconds", kind="hub")
    assert 7200 <= hub_age < 7300
    change_age = value(samples, "hubondemand_oldest_pending_approval_age_seconds", kind="change")
    assert 1800 <= change_age < 1900
    # The running GPU hub (5 days left) and the expiring one (14 days); not the suspended one.
    assert value(samples, "hubondemand_hubs_expiring_within_14_days") == 2
    assert value(samples, "hubondemand_gpus_allocatable", gpu_type="a100") == 8
    assert value(samples, "hubondemand_gpus_in_use", gpu_type="a100") == 2
    assert value(samples, "hubondemand_gpus_reserved", gpu_type="a100") == 3
    assert value(samples, "hubondemand_usage_last_pass_timestamp_seconds") > 0

    # The admin approves the oldest request: the numbers move.
    lifecycle.transition(waiting.pk, HubState.PENDING, HubState.APPROVED)
    lifecycle.transition(gpu_hub.pk, HubState.RUNNING, HubState.SUSPENDED)
    samples = scrape()
    assert value(samples, "hubondemand_hubs", state="pending") == 1
    assert value(samples, "hubondemand_hubs", state="approved") == 2
    assert value(samples, "hubondemand_hubs", state="suspended") == 2
    assert value(samples, "hubondemand_pending_approvals", kind="hub") == 1
    assert value(samples, "hubondemand_oldest_pending_approval_age_seconds", kind="hub") < 60
    assert value(samples, "hubondemand_gpus_reserved", gpu_type="a100") is None
    assert value(samples, "hubondemand_hubs_expiring_within_14_days") == 1


def test_cost_this_month_follows_recorded_usage(a100):
    price_list(cpu="10", memory="2", gpu={a100: "100"})
    hub = HubFactory(state=HubState.RUNNING)
    today = timezone.now().astimezone(datetime.UTC).date()
    common = {"hub": hub, "username": "", "component": "hub"}

    def cost(resource: str) -> float:
        return value(scrape(), "hubondemand_cost_month_to_date", currency="CZK", resource=resource)

    assert cost("cpu") == 0
    # Two core-hours and four GiB-hours today; a GPU-hour last month does not count.
    UsageDay.objects.create(
        day=today, cpu_millicore_seconds=2 * 3600 * 1000, memory_mib_seconds=4 * 3600 * 1024,
        **common,
    )  # fmt: skip
    UsageDay.objects.create(
        day=today.replace(day=1) - datetime.timedelta(days=1),
        gpu_seconds=3600,
        gpu_product=a100.node_label_value,
        **common,
    )
    assert cost("cpu") == 20.0
    assert cost("memory") == 8.0
    assert cost("gpu") == 0.0
    UsageDay.objects.create(
        day=today, gpu_seconds=1800, gpu_product=a100.node_label_value, username="u", hub=hub,
        component="server",
    )  # fmt: skip
    assert cost("gpu") == float(Decimal("50.00"))


def test_queue_lengths_count_what_waits_in_redis(monkeypatch):
    from portal.celery import app

    broker = redis_url_for_this_worker()
    redis.Redis.from_url(broker).flushdb()
    monkeypatch.setenv("CELERY_BROKER_URL", broker)
    use_current_broker(app)
    try:
        assert value(scrape(), "hubondemand_celery_queue_length", queue="provisioning") == 0
        app.send_task("portal.hubs.tasks.provision_hub", (1,))
        app.send_task("portal.hubs.tasks.provision_hub", (2,), priority=9)
        app.send_task("portal.usage.tasks.collect_usage")
        samples = scrape()
        assert value(samples, "hubondemand_celery_queue_length", queue="provisioning") == 2
        assert value(samples, "hubondemand_celery_queue_length", queue="celery") == 1
        assert value(samples, "hubondemand_metrics_section_up", section="queues") == 1
    finally:
        redis.Redis.from_url(broker).flushdb()
        monkeypatch.delenv("CELERY_BROKER_URL")
        use_current_broker(app)


def test_a_broker_that_is_away_leaves_its_part_out_not_the_scrape(monkeypatch):
    HubFactory(state=HubState.RUNNING)
    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{free_port()}/0")
    samples = scrape()
    assert value(samples, "hubondemand_metrics_section_up", section="queues") == 0
    assert value(samples, "hubondemand_metrics_section_up", section="hubs") == 1
    assert value(samples, "hubondemand_hubs", state="running") == 1
    assert not [key for key in samples if key[0] == "hubondemand_celery_queue_length"]


def test_a_scrape_costs_the_same_queries_for_one_hub_or_many(a100):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            scrape()
        return len(captured)

    today = timezone.localdate()
    HubFactory(state=HubState.RUNNING, start_date=today, gpu_type=a100, gpus_per_user=1)
    few = queries()
    owner = UserFactory()
    for n in range(25):
        HubFactory(
            owner=owner,
            state=HubState.RUNNING if n % 2 else HubState.PENDING,
            start_date=today,
            gpu_type=a100,
            gpus_per_user=1,
        )
    assert queries() == few
    assert few <= 12


# --- Worker-side metrics recorded in this process ---------------------------------------------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_provisioning_duration_runs_from_the_approval_to_running(
    django_capture_on_commit_callbacks,
):
    hub = HubFactory(state=HubState.PENDING)
    lifecycle.transition(hub.pk, HubState.PENDING, HubState.APPROVED)
    # Approved ten minutes ago; the worker took it only now.
    HubEvent.objects.filter(hub=hub, to_state=HubState.APPROVED).update(
        created=timezone.now() - datetime.timedelta(minutes=10)
    )
    count = sample("hubondemand_provisioning_duration_seconds_count")
    total = sample("hubondemand_provisioning_duration_seconds_sum")
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.mark_provisioning(hub.pk)
        lifecycle.mark_running(hub.pk)
    assert sample("hubondemand_provisioning_duration_seconds_count") == count + 1
    assert 600 <= sample("hubondemand_provisioning_duration_seconds_sum") - total < 660

    # Resumed after a suspension: from its move to provisioning, not from the old approval.
    lifecycle.transition(hub.pk, HubState.RUNNING, HubState.SUSPENDED)
    total = sample("hubondemand_provisioning_duration_seconds_sum")
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.transition(hub.pk, HubState.SUSPENDED, HubState.PROVISIONING)
        lifecycle.mark_running(hub.pk)
    assert sample("hubondemand_provisioning_duration_seconds_count") == count + 2
    assert sample("hubondemand_provisioning_duration_seconds_sum") - total < 60

    # An update that finishes is no provisioning.
    lifecycle.transition(hub.pk, HubState.RUNNING, HubState.UPDATING)
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.mark_running(hub.pk)
    assert sample("hubondemand_provisioning_duration_seconds_count") == count + 2


def test_a_task_run_is_counted_by_outcome_and_timed():
    from portal.hubs import tasks

    labels = {"task": "portal.hubs.tasks.provision_hub"}
    runs = sample("hubondemand_celery_tasks_total", **labels, outcome="success")
    timed = sample("hubondemand_celery_task_duration_seconds_count", **labels)
    assert tasks.provision_hub.apply((10**9,)).get() == "missing"
    assert sample("hubondemand_celery_tasks_total", **labels, outcome="success") == runs + 1
    assert sample("hubondemand_celery_task_duration_seconds_count", **labels) == timed + 1


# --- Logs -------------------------------------------------------------------------------------


@pytest.fixture
def json_log():
    """What the portal's JSON formatter writes during the test, one parsed line each."""
    spec = logconfig.formatter("json")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(spec.pop("()")(**spec))
    root = logging.getLogger()
    root.addHandler(handler)

    def lines() -> list[dict]:
        return [json.loads(line) for line in handler.stream.getvalue().splitlines()]

    yield lines
    root.removeHandler(handler)


def test_every_log_line_of_a_request_carries_its_id_user_and_hub(alice, bob, json_log):
    token = api_token(alice)
    bobs = HubFactory(owner=bob)
    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="portal.example.org")

    created = client.post("/api/v1/tokens/", {"name": "ci"}, content_type="application/json")
    assert created.status_code == 201
    hidden = client.get(f"/api/v1/hubs/{bobs.pk}/")
    assert hidden.status_code == 404

    lines = json_log()
    # The token issued through the API (the test's own, issued above, is no request's).
    *_, made = [line for line in lines if line["event"] == "api_token_created"]
    assert made["request_id"] == created["X-Request-ID"]
    assert made["user"] == "alice"
    # Django's own line of the 404, from the standard library's logger.
    (not_found,) = [line for line in lines if line["event"].startswith("Not Found:")]
    assert not_found["logger"] == "django.request"
    assert not_found["request_id"] == hidden["X-Request-ID"] != created["X-Request-ID"]
    assert (not_found["user"], not_found["hub_id"]) == ("alice", bobs.pk)
    assert all(token not in json.dumps(line) for line in lines)


def test_a_request_id_comes_from_a_trusted_proxy_only(settings):
    client = Client(HTTP_HOST="portal.example.org")
    given = {"HTTP_X_REQUEST_ID": "edge-4f2a9c"}
    untrusted = client.get("/accounts/login/", **given)["X-Request-ID"]
    assert untrusted != "edge-4f2a9c" and len(untrusted) == 32
    settings.TRUSTED_PROXIES = ["127.0.0.0/8"]
    assert client.get("/accounts/login/", **given)["X-Request-ID"] == "edge-4f2a9c"
    forged = client.get("/accounts/login/", HTTP_X_REQUEST_ID='x" injected=1\n')["X-Request-ID"]
    assert forged != 'x" injected=1\n' and len(forged) == 32


def test_secret_looking_fields_are_redacted(json_log):
    structlog.get_logger("test").info(
        "call", authorization="Bearer abc123", password="hunter2", user="alice"
    )
    (line,) = [line for line in json_log() if line["event"] == "call"]
    assert line["authorization"] == line["password"] == logconfig.REDACTED
    assert line["user"] == "alice"
