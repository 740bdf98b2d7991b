"""GPU capacity: reservations over hubs' dates, free over a period, the timeline, the cost
estimate, and approval that re-checks capacity atomically (with an override and a reason)."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from portal.hubs import hubspec, lifecycle
from portal.hubs.lifecycle import HubState, RevisionState
from portal.hubs.models import GpuType, Hub
from portal.hubs.services import changes, decisions
from portal.usage import capacity
from portal.usage.capacity import OverCapacity
from portal.usage.models import GpuInventory
from tests.factories import AdminFactory, HardwareOptionFactory, HubFactory
from tests.support import needs_postgresql, race, won_or_lost
from tests.usage_support import price_list

pytestmark = pytest.mark.django_db

D = datetime.date(2027, 3, 1)


def day(n: int) -> datetime.date:
    return D + datetime.timedelta(days=n)


def counted(allocatable: int, in_use: int = 0) -> GpuType:
    """The A100 type, with `allocatable` of them seen in the cluster by a collection pass."""
    gpu = GpuType.objects.get(name="a100")
    GpuInventory.objects.create(
        product=gpu.node_label_value,
        allocatable=allocatable,
        in_use=in_use,
        observed=timezone.now(),
    )
    return gpu


@pytest.fixture
def a100():
    return counted(8, in_use=2)


def gpu_hub(gpu, start, end, users=1, gpus=1, state=HubState.RUNNING, **kwargs):
    return HubFactory(
        gpu_type=gpu,
        gpus_per_user=gpus,
        expected_users=users,
        start_date=start,
        end_date=end,
        state=state,
        **kwargs,
    )


def test_reserved_gpus_are_the_hubs_gpu_quota(a100, settings):
    hub = gpu_hub(a100, day(0), day(1), users=3, gpus=2, notebooks_per_user=2)
    spec = hubspec.from_hub(hub)
    assert capacity.reserved_gpus(spec) == 12  # 3 users x 2 servers x 2 GPUs, as the quota
    settings.HUB_QUOTA_CAPS = {"requests.nvidia.com/gpu": "5"}
    assert capacity.reserved_gpus(spec) == 5
    assert capacity.reserved_gpus(hubspec.from_hub(HubFactory())) == 0


def test_free_over_a_period_with_overlapping_hubs_is_the_minimum_over_its_days(a100):
    gpu_hub(a100, day(0), day(9), users=2)  # 2 GPUs on days 0-9
    gpu_hub(a100, day(5), day(14), users=3, state=HubState.APPROVED)  # 3 GPUs on days 5-14
    gpu_hub(a100, day(8), day(8), users=1, state=HubState.EXPIRING)  # 1 GPU on day 8
    # Not reserving: pending, rejected, suspended, deleted hubs and other GPU types.
    for state in (HubState.PENDING, HubState.REJECTED, HubState.SUSPENDED, HubState.DELETED):
        gpu_hub(a100, day(0), day(20), users=4, state=state)
    gpu_hub(GpuType.objects.get(name="h100"), day(0), day(20), users=4)

    by_day = capacity.reserved_by_day(a100, day(0), day(15))
    assert [by_day[day(n)] for n in range(16)] == [2] * 5 + [5] * 3 + [6] + [5] + [3] * 5 + [0]

    free = capacity.free_over(a100, day(0), day(15))
    assert (free.allocatable, free.max_reserved, free.free, free.busiest_day) == (8, 6, 2, day(8))
    assert capacity.free_over(a100, day(10), day(20)).free == 5
    assert capacity.free_over(a100, day(16), day(20)).free == 8
    timeline = capacity.timeline(a100, weeks=1, start=day(3))
    assert [(t.day, t.reserved, t.free) for t in timeline][:3] == [
        (day(3), 2, 6),
        (day(4), 2, 6),
        (day(5), 5, 3),
    ]
    assert len(timeline) == 7


def test_capacity_of_a_gpu_type_never_observed_is_unknown_and_not_enforced():
    h100 = GpuType.objects.get(name="h100")
    free = capacity.free_over(h100, day(0), day(3))
    assert free.allocatable is None and free.free is None and free.fits(100)


class TestApprove:
    def test_gpus_that_fit_are_approved(
        self, a100, charlie, queued, django_capture_on_commit_callbacks
    ):
        gpu_hub(a100, day(0), day(9), users=5)
        hub = gpu_hub(a100, day(5), day(20), users=3, state=HubState.PENDING)
        with django_capture_on_commit_callbacks(execute=True):
            assert decisions.approve(hub, charlie).state == HubState.APPROVED
        assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]

    def test_gpus_over_capacity_are_refused_and_nothing_changes(
        self, a100, charlie, queued, django_capture_on_commit_callbacks
    ):
        gpu_hub(a100, day(0), day(9), users=6)
        hub = gpu_hub(a100, day(9), day(20), users=3, state=HubState.PENDING)
        # The on-commit callbacks run, so a provisioning task queued anyway would be seen.
        with (
            django_capture_on_commit_callbacks(execute=True),
            pytest.raises(OverCapacity, match="only 2 of 8 are free"),
        ):
            decisions.approve(hub, charlie)
        hub.refresh_from_db()
        assert hub.state == HubState.PENDING and queued == []

    def test_override_needs_a_reason_which_the_event_records(self, a100, charlie, queued):
        gpu_hub(a100, day(0), day(9), users=8)
        hub = gpu_hub(a100, day(0), day(3), users=1, state=HubState.PENDING)
        with pytest.raises(decisions.ReasonRequired):
            decisions.approve(hub, charlie, "  ", override=True)
        assert Hub.objects.get(pk=hub.pk).state == HubState.PENDING

        decisions.approve(hub, charlie, "Node arrives on Monday", override=True)
        event = hub.events.last()
        assert event.to_state == HubState.APPROVED and event.actor == charlie
        assert event.reason == "Approved over capacity (1 GPUs, 0 free): Node arrives on Monday"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_two_admins_approving_the_last_gpus_at_once_let_exactly_one_through(queued):
    a100 = counted(4)
    gpu_hub(a100, day(0), day(30), users=2)
    first = gpu_hub(a100, day(10), day(20), users=2, state=HubState.PENDING)
    second = gpu_hub(a100, day(15), day(25), users=2, state=HubState.PENDING)
    admins = [AdminFactory(username="admin1"), AdminFactory(username="admin2")]

    outcomes = race(
        lambda: decisions.approve(Hub.objects.get(pk=first.pk), admins[0]),
        lambda: decisions.approve(Hub.objects.get(pk=second.pk), admins[1]),
        losing=(OverCapacity,),
    )

    assert won_or_lost(outcomes) == ["lost", "won"]
    states = sorted(
        Hub.objects.filter(pk__in=[first.pk, second.pk]).values_list("state", flat=True)
    )
    assert states == [HubState.APPROVED, HubState.PENDING]
    assert capacity.free_over(a100, day(0), day(30)).free == 0


def test_cost_estimate_of_a_request(a100):
    price_list(gpu={a100: "100"}, valid_from=day(0))
    price_list(cpu="20", gpu={a100: "100"}, valid_from=day(1))  # CPU price doubles on day 1
    option = HardwareOptionFactory(
        name="est",
        cpu_guarantee=Decimal("0.5"),
        cpu_limit=Decimal("1"),
        mem_guarantee_gib=Decimal("2"),
        mem_limit_gib=Decimal("4"),
    )
    estimate = capacity.estimate_cost(
        start=day(0),
        end=day(1),
        expected_users=10,
        hardware_options=[option],
        gpu_type=a100,
        gpus_per_user=1,
        home_size_gib=10,
        shared_volume_gib=100,
    )
    # Per day: CPU 10 x 0.5 x 24 x 10 = 1200; memory 10 x 2 x 24 x 2 = 960;
    # GPUs 10 x 24 x 100 = 24000; storage 200 GiB x 72 / 30 = 480.
    assert estimate.per_day == {
        "cpu": Decimal("1200.00"),
        "memory": Decimal("960.00"),
        "gpu": Decimal("24000.00"),
        "storage": Decimal("480.00"),
        "total": Decimal("26640.00"),
    }
    assert estimate.total["cpu"] == Decimal("3600.00")  # 1200 + 2400 at the new price
    assert estimate.total["total"] == Decimal("54480.00")
    assert (estimate.days, estimate.servers, estimate.currency) == (2, 10, "CZK")


def test_a_self_service_request_whose_gpus_do_not_fit_waits_for_an_admin(a100, spec, alice):
    from portal.hubs.models import SelfServicePolicy

    SelfServicePolicy.objects.update_or_create(pk=1, defaults={"max_gpus_per_user": 1})
    data = spec(gpu_type="a100", gpus_per_user="1", expected_users="6")
    inside = decisions.submit(alice, {**data, "slug": "fits"})  # 6 of 8 free
    assert inside.state == HubState.APPROVED

    over = decisions.submit(alice, {**data, "slug": "does-not-fit"})  # 6 more, 2 free

    assert over.state == HubState.PENDING
    assert "GPUs do not fit (6 wanted, 2 free" in over.state_reason


def test_a_change_asking_for_gpus_that_do_not_fit_waits_for_an_admin(a100, alice, queued):
    from portal.hubs.models import SelfServicePolicy
    from portal.hubs.revisions import form_data, spec_of_hub

    SelfServicePolicy.objects.update_or_create(pk=1, defaults={"max_gpus_per_user": 1})
    start, end = timezone.localdate(), timezone.localdate() + datetime.timedelta(days=30)
    gpu_hub(a100, start, end, users=5)  # another hub holds 5 of the 8
    hub = gpu_hub(a100, start, end, users=2, owner=alice)  # this one 2: 1 left

    def change(**fields):
        return {**form_data(spec_of_hub(hub)), **fields}

    grown = changes.request_change(
        hub, alice, change(expected_users="4", max_gpus="4")
    )  # 2 more, 1 free
    assert grown.state == RevisionState.PENDING
    assert "GPUs do not fit (4 wanted, 3 free" in grown.reason
    changes.reject_change(grown, AdminFactory(), "No GPUs left")

    shrunk = changes.request_change(hub, alice, change(expected_users="1", max_gpus="1"))
    assert shrunk.state == RevisionState.APPLIED


def test_a_request_for_gpus_nobody_has_counted_yet_waits_for_an_admin(spec, alice, queued):
    from portal.hubs.models import SelfServicePolicy

    SelfServicePolicy.objects.update_or_create(pk=1, defaults={"max_gpus_per_user": 1})
    data = spec(gpu_type="a100", gpus_per_user="1", expected_users="2")

    hub = decisions.submit(alice, {**data, "slug": "before-count"})

    assert hub.state == HubState.PENDING
    assert "NVIDIA A100 80 GB GPUs have not been counted yet" in hub.state_reason
    counted(8)
    assert decisions.submit(alice, {**data, "slug": "after-count"}).state == HubState.APPROVED


def test_gpus_nobody_has_counted_yet_wait_for_an_admin(alice, queued):
    """Before the usage collector's first pass the cluster's GPUs of a type are unknown: a
    request or a change that would take them is not approved by the policy alone."""
    from portal.hubs.models import GpuType, SelfServicePolicy
    from portal.hubs.revisions import form_data, spec_of_hub

    SelfServicePolicy.objects.update_or_create(pk=1, defaults={"max_gpus_per_user": 1})
    a100 = GpuType.objects.get(name="a100")
    uncounted = (
        "Waiting for an admin: the cluster's NVIDIA A100 80 GB GPUs have not been counted yet, so "
        "whether they fit is not known."
    )
    start, end = timezone.localdate(), timezone.localdate() + datetime.timedelta(days=30)
    hub = gpu_hub(a100, start, end, users=2, owner=alice)

    grown = changes.request_change(
        hub, alice, {**form_data(spec_of_hub(hub)), "expected_users": "3", "max_gpus": "3"}
    )
    assert grown.state == RevisionState.PENDING
    assert grown.reason == uncounted
    changes.reject_change(grown, AdminFactory(), "Wait for the count")
    # Fewer GPUs on the same days need no count.
    shrunk = changes.request_change(
        hub, alice, {**form_data(spec_of_hub(hub)), "expected_users": "1"}
    )
    assert shrunk.state == RevisionState.APPLIED

    counted(8)
    hub.refresh_from_db()
    lifecycle.mark_running(hub.pk)
    grown_again = changes.request_change(
        hub, alice, {**form_data(spec_of_hub(hub)), "expected_users": "3", "max_gpus": "3"}
    )
    assert grown_again.state == RevisionState.APPLIED


class TestApproveChange:
    """An admin's approval of a change re-checks its GPUs, as the approval of a new hub does."""

    @pytest.fixture
    def pending_change(self, a100, alice, queued):
        """A running hub holding 2 of 8 A100s, another holding 5 (1 free), and a pending change
        of the first to 4 users: 4 GPUs where 3 are free without its own reservation."""
        from portal.hubs.models import SelfServicePolicy
        from portal.hubs.revisions import form_data, spec_of_hub

        SelfServicePolicy.objects.update_or_create(pk=1, defaults={"max_gpus_per_user": 1})
        start, end = timezone.localdate(), timezone.localdate() + datetime.timedelta(days=30)
        gpu_hub(a100, start, end, users=5)
        hub = gpu_hub(a100, start, end, users=2, owner=alice)
        change = {**form_data(spec_of_hub(hub)), "expected_users": "4", "max_gpus": "4"}
        return changes.request_change(hub, alice, change)

    def test_over_capacity_is_refused_and_nothing_changes(
        self, pending_change, charlie, queued, django_capture_on_commit_callbacks
    ):
        with (
            django_capture_on_commit_callbacks(execute=True),
            pytest.raises(OverCapacity, match="the hub needs 4, but only 3 of 8 are free"),
        ):
            changes.approve_change(pending_change, charlie)
        pending_change.refresh_from_db()
        hub = Hub.objects.get(pk=pending_change.hub_id)
        assert pending_change.state == RevisionState.PENDING
        assert (hub.state, hub.expected_users, queued) == (HubState.RUNNING, 2, [])

    def test_an_override_needs_a_reason_which_the_decision_records(
        self, pending_change, charlie, queued, django_capture_on_commit_callbacks
    ):
        from portal.audit.models import AuditEvent
        from portal.hubs.models import HubRevision

        with pytest.raises(decisions.ReasonRequired):
            changes.approve_change(pending_change, charlie, " ", override=True)
        assert HubRevision.objects.get(pk=pending_change.pk).state == RevisionState.PENDING

        with django_capture_on_commit_callbacks(execute=True):
            applied = changes.approve_change(pending_change, charlie, "Grant money", override=True)

        assert applied.state == RevisionState.APPLIED and applied.approver == charlie
        assert applied.reason == "Approved over capacity (4 GPUs, 3 free): Grant money"
        assert Hub.objects.get(pk=applied.hub_id).expected_users == 4
        audit = AuditEvent.objects.filter(action="hub.change_approved").last()
        assert audit.details["reason"] == applied.reason
        assert [name for name, _, _ in queued] == ["provision"]

    def test_gpus_taken_since_the_change_was_asked_for_are_seen(self, a100, alice, charlie):
        """A change that fitted when it was asked for (it waits for another reason) is refused
        when another hub has taken the GPUs in the meantime."""
        from portal.hubs.models import SelfServicePolicy
        from portal.hubs.revisions import form_data, spec_of_hub

        SelfServicePolicy.objects.update_or_create(pk=1, defaults={"max_expected_users": 3})
        start, end = timezone.localdate(), timezone.localdate() + datetime.timedelta(days=30)
        hub = gpu_hub(a100, start, end, users=2, owner=alice)
        change = {
            **form_data(spec_of_hub(hub)),
            "expected_users": "6",
            "max_gpus": "6",
        }  # 6 of 8 free: fits
        revision = changes.request_change(hub, alice, change)
        assert "GPUs do not fit" not in revision.reason and "users" in revision.reason
        gpu_hub(a100, start, end, users=3, state=HubState.APPROVED)  # now 5 free for its 6

        with pytest.raises(OverCapacity, match="the hub needs 6, but only 5 of 8 are free"):
            changes.approve_change(revision, charlie)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_approving_a_change_and_a_request_for_the_last_gpus_at_once_lets_one_through(queued):
    """A change's approval and a new hub's approval lock the same GPU type row."""
    from portal.hubs.models import HubRevision, SelfServicePolicy
    from portal.hubs.revisions import form_data, spec_of_hub

    a100 = counted(4)
    start, end = timezone.localdate(), timezone.localdate() + datetime.timedelta(days=30)
    owner = AdminFactory(username="owner")
    hub = gpu_hub(a100, start, end, users=2, owner=owner)  # 2 of 4; 2 left
    change = {
        **form_data(spec_of_hub(hub)),
        "expected_users": "4",
        "max_gpus": "4",
        "description": "grow",
    }
    SelfServicePolicy.objects.update_or_create(pk=1, defaults={"max_expected_users": 3})
    revision = changes.request_change(hub, owner, change)  # 2 more: fits, waits for users
    assert revision.state == RevisionState.PENDING
    pending = gpu_hub(a100, start, end, users=2, state=HubState.PENDING)  # 2 more: fits alone
    admins = [AdminFactory(username="admin1"), AdminFactory(username="admin2")]

    outcomes = race(
        lambda: changes.approve_change(HubRevision.objects.get(pk=revision.pk), admins[0]),
        lambda: decisions.approve(Hub.objects.get(pk=pending.pk), admins[1]),
        losing=(OverCapacity,),
    )

    assert won_or_lost(outcomes) == ["lost", "won"]
    assert capacity.free_over(a100, start, end).free == 0
    change_won = HubRevision.objects.get(pk=revision.pk).state == RevisionState.APPLIED
    request_won = Hub.objects.get(pk=pending.pk).state == HubState.APPROVED
    assert change_won != request_won
