"""The server policy's limits and pages (the real JupyterHub tests are in
tests/cluster/test_server_policy.py): owners choose within each option's bounds, GPU servers get
the shorter limits, the pages show them, and only a server's own user may keep it running."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from portal.hubs import server_policy
from portal.hubs.lifecycle import HubState
from portal.hubs.models import HardwareOption, ServerRun
from tests.factories import GpuTypeFactory, HardwareOptionFactory, HubFactory

pytestmark = pytest.mark.django_db

OPTION = dict(
    idle_timeout_minutes=120,
    max_idle_timeout_minutes=480,
    gpu_idle_timeout_minutes=30,
    max_age_hours=24,
    gpu_max_age_hours=8,
)


@pytest.mark.parametrize(
    ("gpu", "owner_idle", "owner_age", "expected"),
    [
        (False, None, None, (120, 24)),  # the catalogue's defaults
        (True, None, None, (30, 8)),  # GPU servers sooner
        (False, 300, 12, (300, 12)),  # the owner's, within the bounds
        (False, 9999, 99, (480, 24)),  # longer than allowed: the bounds
        (True, 300, 99, (30, 8)),  # with a GPU an owner may only shorten
        (True, 15, 2, (15, 2)),
    ],
)
def test_owners_choose_within_the_bounds_of_each_option(gpu, owner_idle, owner_age, expected):
    option = HardwareOption(**OPTION)
    limits = server_policy.option_limits(
        option, gpu=gpu, owner_idle_minutes=owner_idle, owner_max_age_hours=owner_age
    )
    assert limits == expected


def test_the_catalogue_refuses_a_default_beyond_its_maximum():
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        HardwareOptionFactory(name="odd", idle_timeout_minutes=600, max_idle_timeout_minutes=60)


@pytest.fixture
def gpu_hub(alice):
    option = HardwareOptionFactory(name="big", display_name="Big", **OPTION)
    return HubFactory(
        owner=alice,
        state=HubState.RUNNING,
        hardware_options=[option],
        gpu_type=GpuTypeFactory(name="a100"),
        gpus_per_user=2,
        idle_timeout_minutes=60,
    )


def test_each_profile_has_its_limits_on_the_hub_page(client, alice, gpu_hub):
    limits = {item.profile: item for item in server_policy.limits_for(gpu_hub)}
    assert (limits["big"].gpus, limits["big"].idle_minutes, limits["big"].max_age_hours) == (
        2,
        30,
        8,
    )
    assert (limits["big-no-gpu"].idle_minutes, limits["big-no-gpu"].max_age_hours) == (60, 24)
    client.force_login(alice)
    page = client.get(reverse("hubs:detail", args=[gpu_hub.pk])).content.decode()
    assert 'id="limits-big"' in page and "30 minutes" in page and "8 hours" in page
    assert 'id="limits-big-no-gpu"' in page and "60 minutes" in page


def idle_run(hub, username, hours_idle=3.0, gpus=2):
    now = timezone.now()
    return ServerRun.objects.create(
        hub=hub,
        username=username,
        started=now - datetime.timedelta(hours=hours_idle + 1),
        profile="big",
        gpus=gpus,
        last_activity=now - datetime.timedelta(hours=hours_idle),
        observed=now,
    )


def test_the_usage_page_shows_the_idle_gpu_time_to_the_owner(client, settings, alice, bob, gpu_hub):
    settings.SERVER_POLICY_IDLE_AFTER_MINUTES = 0
    idle_run(gpu_hub, "alice", hours_idle=3.0, gpus=2)
    client.force_login(alice)
    page = client.get(reverse("usage:hub", args=[gpu_hub.pk])).content.decode()
    assert "6.0 GPU hours" in page
    client.force_login(bob)
    assert client.get(reverse("usage:hub", args=[gpu_hub.pk])).status_code == 404


@pytest.mark.parametrize(
    ("who", "status"), [("owner", 200), ("other", 404), ("admin", 404), ("anonymous", 302)]
)
def test_only_the_servers_own_user_may_keep_it_running(
    client, alice, bob, charlie, gpu_hub, who, status
):
    run = idle_run(gpu_hub, "alice")
    user = {"owner": alice, "other": bob, "admin": charlie}.get(who)
    if user:
        client.force_login(user)
    url = reverse("hubs:keep_running", args=[gpu_hub.pk, run.pk])
    assert client.get(url).status_code == status
    before = ServerRun.objects.get(pk=run.pk)
    client.post(url)
    after = ServerRun.objects.get(pk=run.pk)
    if who != "owner":
        assert (after.last_activity, after.extended) == (before.last_activity, before.extended)
