"""Fixtures of the portal's tests: the Healthchecks cast (alice owns, bob is another researcher,
charlie is a portal admin), valid request data, and a record of queued provisioning tasks.

Cluster fixtures live in the repository's conftest.py and tests/cluster/; real Celery workers
(`background`) here.
"""

import datetime
import ipaddress
import os
import secrets

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import AdminFactory, HubFactory, UserFactory
from tests.support import (
    Workers,
    broker_hand_over,
    database_url,
    redis_url_for_this_worker,
    use_current_broker,
)


def pytest_configure(config):
    # Static files are served from the source folders (WHITENOISE_USE_FINDERS); STATIC_ROOT
    # only exists after collectstatic.
    config.addinivalue_line("filterwarnings", "ignore:No directory at:UserWarning")


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Hashing strength is not under test; the default hasher costs ~0.3 s per user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fresh_rate_limits(settings):
    """Rate-limit counts (sign-in, API writes) live in the cache; each test starts with none.

    A shared Redis (REDIS_URL set) is never flushed: the test gets a key prefix of its own,
    so neither another worker's counts nor an earlier run's (they last the window) reach it.
    """
    from django.core.cache import caches
    from django.core.cache.backends.locmem import LocMemCache

    if isinstance(caches["default"], LocMemCache):
        caches["default"].clear()
    else:
        settings.CACHES = own_cache_prefix(settings.CACHES)


def own_cache_prefix(caches: dict) -> dict:
    default = caches["default"]
    prefix = f"{default.get('KEY_PREFIX', '')}-test-{secrets.token_hex(6)}"
    return {**caches, "default": {**default, "KEY_PREFIX": prefix}}


@pytest.fixture(params=["memory", "redis"])
def rate_limit_cache(request, settings):
    """Where rate limits count: the process's memory, or Redis (this worker's own database),
    as in production, where every web process shares the counts. Returns the Redis client of
    the Redis one (None for memory)."""
    if request.param == "memory":
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        return None
    import redis

    url = redis_url_for_this_worker()
    settings.CACHES = own_cache_prefix(
        {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    )
    return redis.Redis.from_url(url)


@pytest.fixture
def client_address():
    """Makes a client address (IPv6 documentation range) that no other test, worker or run
    used, so the rate limiter's counts for it start at zero."""

    def new() -> str:
        return str(ipaddress.IPv6Address("2001:db8::") + secrets.randbits(64))

    return new


CHROMIUM = "/usr/bin/chromium"
# As root, and without the background connections this machine's closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def chromium(monkeypatch):
    """Headless Debian Chromium, driven by Playwright."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls here are plain.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        yield browser
        browser.close()


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


@pytest.fixture
def charlie(db):
    return AdminFactory(username="charlie")


@pytest.fixture
def hub(alice):
    """A pending request of alice's."""
    return HubFactory(owner=alice, slug="alice-course", display_name="Alice's course")


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def today() -> datetime.date:
    return timezone.localdate()


@pytest.fixture
def spec(today):
    """Form data for a request inside the seeded self-service policy."""

    def make(**overrides):
        data = {
            "display_name": "Statistics 101",
            "slug": "stats-101",
            "description": "Exercises for the spring course",
            "kind": "course",
            "start_date": (today + datetime.timedelta(days=1)).isoformat(),
            "end_date": (today + datetime.timedelta(days=60)).isoformat(),
            "expected_users": "40",
            "notebooks_per_user": "1",
            "hardware_options": ["small", "medium"],
            "gpu_type": "",
            "gpus_per_user": "0",
            "images": ["scipy"],
            "custom_image": "",
            "home_size_gib": "10",
            "shared_volume_gib": "0",
            "shared_volume_mode": "none",
            "idle_timeout_minutes": "60",
            "co_owners": "",
            "members": "",
        }
        data.update(overrides)
        return {key: value for key, value in data.items() if value is not None}

    return make


@pytest.fixture
def payload(today):
    """API JSON for a request inside the seeded self-service policy."""

    def make(**overrides):
        data = {
            "display_name": "Statistics 101",
            "slug": "stats-101",
            "kind": "course",
            "start_date": (today + datetime.timedelta(days=1)).isoformat(),
            "end_date": (today + datetime.timedelta(days=60)).isoformat(),
            "expected_users": 40,
            "hardware_options": ["small"],
            "images": ["scipy"],
        }
        data.update(overrides)
        return {key: value for key, value in data.items() if value is not None}

    return make


@pytest.fixture
def queued():
    """Record the provisioning tasks queued by on-commit callbacks (run them by wrapping the
    action in ``django_capture_on_commit_callbacks(execute=True)``).

    Only the hand-over to the broker is replaced; the tasks themselves are tested against the
    real control plane in tests/cluster/.
    """
    from portal.hubs import queue

    names = {queue.PROVISION: "provision", queue.DEPROVISION: "deprovision"}
    calls: list[tuple[str, tuple, dict]] = []

    def record(name: str, args: tuple, routed_to: str) -> None:
        if name in names:
            calls.append((names[name], args, {"queue": routed_to}))

    with broker_hand_over(record):
        yield calls


@pytest.fixture
def applied():
    """Hub ids whose members ConfigMap was queued (only the hand-over to the broker is
    replaced; the task runs against the real control plane in tests/cluster/)."""
    from portal.hubs import queue

    calls: list[int] = []

    def record(name: str, args: tuple, routed_to: str) -> None:
        if name == queue.APPLY_MEMBERS:
            calls.append(args[0])

    with broker_hand_over(record):
        yield calls


@pytest.fixture
def running_hub(alice):
    """alice's hub, approved and running (the state a change starts from)."""
    from portal.hubs.lifecycle import HubState

    return HubFactory(
        owner=alice, slug="alice-course", display_name="Alice's course", state=HubState.RUNNING
    )


@pytest.fixture
def broker_url() -> str:
    """The broker this test's tasks go through (a Redis database per xdist worker)."""
    return redis_url_for_this_worker()


@pytest.fixture
def background(tmp_path, monkeypatch, broker_url):
    """Start real Celery workers (and hub watchers) that consume `broker_url` and write to this
    test's database; this process's tasks are sent to the same broker. Their metrics ports
    are off unless a test sets them, and their heartbeats go to the test's own folder."""
    if connection.vendor != "postgresql":
        pytest.skip("the worker process needs a shared database: set DATABASE_URL to PostgreSQL")
    import redis

    from portal.celery import app

    redis.Redis.from_url(broker_url).flushdb()
    # Celery reads CELERY_BROKER_URL from the environment before any setting.
    monkeypatch.setenv("CELERY_BROKER_URL", broker_url)
    use_current_broker(app)
    assert app.conf.broker_url == broker_url
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": broker_url,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "WORKER_METRICS_PORT": "0",
        "WATCHER_METRICS_PORT": "0",
        "HEALTH_HEARTBEAT_DIR": str(tmp_path / "heartbeats"),
    }
    started = Workers(broker_url, env, tmp_path)
    yield started
    started.stop_all()
    monkeypatch.delenv("CELERY_BROKER_URL")
    use_current_broker(app)
    for index in range(len(started.processes)):
        print(started.log(index)[-3000:])
    for index in range(len(started.watchers)):
        print(started.watcher_log(index)[-3000:])


def pytest_collection_modifyitems(items):
    """Transactional tests must restore the seeded catalogues the same way.

    A transactional test without serialized_rollback flushes and re-creates content types; a
    later serialized_rollback test on the same worker then fails to restore its rows."""
    for item in items:
        marker = item.get_closest_marker("django_db")
        if (
            marker
            and marker.kwargs.get("transaction")
            and not marker.kwargs.get("serialized_rollback")
        ):
            raise pytest.UsageError(
                f"{item.nodeid}: use django_db(transaction=True, serialized_rollback=True)"
            )
