"""submit/approve/reject/cancel/delete and the self-service policy."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from portal.hubs import hubspec, revisions
from portal.hubs.lifecycle import HubState, RevisionState, StateConflict
from portal.hubs.models import GpuType, Hub, Member, SelfServicePolicy
from portal.hubs.services import changes, decisions, policy
from portal.usage.models import GpuInventory
from tests.factories import AdminFactory, HardwareOptionFactory, HubFactory, UserFactory
from tests.support import needs_postgresql, race, won_or_lost

pytestmark = pytest.mark.django_db


def test_seeded_catalogues_and_policy():
    policy = SelfServicePolicy.current()
    assert policy.pk is not None
    assert policy.max_gpus_per_user == 0
    assert "quay.io" in policy.registries


class TestSubmit:
    def test_inside_policy_is_approved_and_queued_once(
        self, alice, spec, queued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            hub = decisions.submit(alice, spec())

        assert hub.state == HubState.APPROVED
        assert hub.owner == alice
        assert [(e.from_state, e.to_state) for e in hub.events.all()] == [
            ("", HubState.PENDING),
            (HubState.PENDING, HubState.APPROVED),
        ]
        assert hub.events.first().actor == alice
        assert hub.events.last().actor is None  # the policy approved it
        assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]

    def test_jobs_access_waits_for_an_admin(
        self, alice, bob, spec, queued, django_capture_on_commit_callbacks
    ):
        """Batch jobs run pods of the members' own making in the hub's namespace: nobody gets
        them from the self-service policy alone, unless an admin's policy says so."""
        with django_capture_on_commit_callbacks(execute=True):
            hub = decisions.submit(alice, spec(jobs_access="on"))
        assert hub.state == HubState.PENDING
        assert "batch jobs needs an admin's approval" in hub.state_reason
        assert queued == []

        SelfServicePolicy.objects.update(jobs_access_needs_approval=False)
        allowed = decisions.submit(bob, spec(slug="stats-102", jobs_access="on"))
        assert allowed.state == HubState.APPROVED
        # Even then the default tier has no jobs role: the owner gives it to a tier.
        assert allowed.tiers.get(is_default=True).jobs_access is False

    def test_spec_is_stored(self, alice, bob, spec, queued):
        carol = UserFactory(username="carol")
        hub = decisions.submit(
            alice,
            spec(co_owners="bob", members="carol", storage_options=[], wipe_home_allowed="on"),
        )
        assert hub.slug == "stats-101"
        assert hub.namespace == "hub-stats-101"
        assert hub.url == "https://stats-101.hubs.localhost"
        assert sorted(hub.hardware_options.values_list("name", flat=True)) == ["medium", "small"]
        assert list(hub.images.values_list("name", flat=True)) == ["scipy"]
        assert hub.wipe_home_allowed is True
        assert set(hub.members.values_list("user__username", "role")) == {
            ("bob", Member.Role.CO_OWNER),
            (carol.username, Member.Role.MEMBER),
        }

    def test_beyond_policy_waits_for_an_admin(
        self, alice, spec, queued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            hub = decisions.submit(alice, spec(gpu_type="a100", gpus_per_user="4"))

        assert hub.state == HubState.PENDING
        assert "4 GPUs per user exceeds the self-service limit of 0" in hub.state_reason
        assert queued == []

    def test_invalid_spec_creates_nothing(self, alice, spec):
        with pytest.raises(decisions.InvalidSpec) as invalid:
            decisions.submit(alice, spec(slug="Not A Slug"))
        assert "slug" in invalid.value.errors
        assert not Hub.objects.exists()


class TestPolicy:
    def test_violations_are_human_readable(self, alice, today):
        large = HardwareOptionFactory(name="large")
        hub = HubFactory(
            owner=alice,
            expected_users=80,
            gpu_type=None,
            home_size_gib=50,
            shared_volume_gib=500,
            shared_volume_mode="ro",
            custom_image="ghcr.io/lab/analysis:1.2",
            hardware_options=[large],
            end_date=today + datetime.timedelta(days=400),
        )
        assert policy.policy_violations(hubspec.from_hub(hub)) == [
            "80 expected users exceeds the self-service limit of 50",
            "Large: CPU limit 8 exceeds the self-service limit of 4 CPU",
            "Large: memory 32 GiB exceeds the self-service limit of 16 GiB",
            "A period of 400 days exceeds the self-service limit of 120 days",
            "50 GiB home exceeds the self-service limit of 20 GiB",
            "500 GiB shared volume exceeds the self-service limit of 100 GiB",
            "Custom image ghcr.io/lab/analysis:1.2 needs an admin's approval",
        ]

    def test_an_owners_live_hubs_are_limited_together(self, alice, bob, spec, queued):
        """Hubs each inside the policy add up: past the per-owner limits the next request waits
        for an admin (another owner's hubs do not count, nor requests still waiting)."""
        SelfServicePolicy.objects.update(max_live_hubs_per_owner=2, max_owner_cpu=100)
        first = decisions.submit(alice, spec(slug="first", expected_users="20"))
        second = decisions.submit(alice, spec(slug="second", expected_users="20"))
        assert (first.state, second.state) == (HubState.APPROVED, HubState.APPROVED)

        third = decisions.submit(alice, spec(slug="third", expected_users="1"))
        assert third.state == HubState.PENDING
        assert "3 live hubs of one owner exceed the self-service limit of 2" in third.state_reason

        Hub.objects.filter(pk=second.pk).update(state=HubState.DELETED)
        big = decisions.submit(alice, spec(slug="big", expected_users="45"))
        assert big.state == HubState.PENDING
        assert "CPU cores, which exceeds the self-service limit of 100 per owner" in (
            big.state_reason
        )
        assert decisions.submit(bob, spec(slug="bobs", expected_users="45")).state == (
            HubState.APPROVED
        )

    def test_a_change_that_adds_to_an_owners_total_waits(self, alice, spec, queued):
        SelfServicePolicy.objects.update(max_owner_cpu=100)
        one = decisions.submit(alice, spec(slug="one", expected_users="20"))
        two = decisions.submit(alice, spec(slug="two", expected_users="20"))
        Hub.objects.filter(pk__in=[one.pk, two.pk]).update(state=HubState.RUNNING)
        data = revisions.form_data(revisions.spec_of_hub(two))
        grown = changes.request_change(two, alice, {**data, "expected_users": "45"})
        assert grown.state == RevisionState.PENDING
        assert [v["field"] for v in grown.violations] == ["__all__"]
        changes.reject_change(grown, AdminFactory(), "Not now")
        shrunk = changes.request_change(two, alice, {**data, "expected_users": "10"})
        assert shrunk.state == RevisionState.APPLIED

    def test_policy_is_read_from_the_database(self, alice, spec, queued):
        policy = SelfServicePolicy.current()
        policy.max_gpus_per_user = 2
        policy.max_gpus_per_hub = 80
        policy.max_cpu_limit = Decimal("1")
        policy.save()
        h100 = GpuType.objects.get(name="h100")  # 40 users x 2 GPUs, all counted and free
        GpuInventory.objects.create(
            product=h100.node_label_value, allocatable=80, observed=timezone.now()
        )
        hub = decisions.submit(
            alice, spec(hardware_options=["small"], gpu_type="h100", gpus_per_user="2")
        )
        assert hub.state == HubState.APPROVED


class TestApprove:
    def test_admin_approves_and_provisioning_is_queued(
        self, hub, charlie, queued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            decisions.approve(hub, charlie, "GPUs are free in March")
        hub.refresh_from_db()
        assert hub.state == HubState.APPROVED
        assert hub.state_reason == "GPUs are free in March"
        event = hub.events.get()
        assert (event.actor, event.to_state) == (charlie, HubState.APPROVED)
        assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]

    def test_approving_twice_queues_once(
        self, hub, charlie, queued, django_capture_on_commit_callbacks
    ):
        stale = Hub.objects.get(pk=hub.pk)  # a second admin's page, loaded before the first click
        with django_capture_on_commit_callbacks(execute=True):
            decisions.approve(hub, charlie)
            with pytest.raises(StateConflict):
                decisions.approve(stale, charlie)
        assert len(queued) == 1
        assert hub.events.count() == 1

    def test_failed_hub_can_be_retried(
        self, alice, charlie, queued, django_capture_on_commit_callbacks
    ):
        hub = HubFactory(owner=alice, state=HubState.FAILED, state_reason="quota invalid")
        with django_capture_on_commit_callbacks(execute=True):
            decisions.approve(hub, charlie)
        assert hub.state == HubState.APPROVED
        assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]


class TestReject:
    def test_reject_with_reason(self, hub, charlie):
        decisions.reject(hub, charlie, "  No GPUs left this term.  ")
        hub.refresh_from_db()
        assert (hub.state, hub.state_reason) == (HubState.REJECTED, "No GPUs left this term.")
        assert hub.events.get().actor == charlie

    @pytest.mark.parametrize("reason", ["", "   ", None])
    def test_reject_without_reason_is_refused(self, hub, charlie, reason):
        with pytest.raises(decisions.ReasonRequired):
            decisions.reject(hub, charlie, reason)
        hub.refresh_from_db()
        assert hub.state == HubState.PENDING
        assert not hub.events.exists()

    def test_rejected_slug_can_be_requested_again(self, hub, charlie, alice, spec, queued):
        decisions.reject(hub, charlie, "Too big")
        again = decisions.submit(alice, spec(slug=hub.slug))
        assert again.slug == hub.slug and again.pk != hub.pk


class TestCancelAndDelete:
    def test_cancel_pending(self, hub, alice):
        decisions.cancel(hub, alice)
        assert hub.state == HubState.CANCELLED

    def test_cancel_running_is_a_conflict(self, alice):
        hub = HubFactory(owner=alice, state=HubState.RUNNING)
        with pytest.raises(StateConflict):
            decisions.cancel(hub, alice)

    def test_delete_running_deprovisions(self, alice, queued, django_capture_on_commit_callbacks):
        hub = HubFactory(owner=alice, state=HubState.RUNNING)
        with django_capture_on_commit_callbacks(execute=True):
            decisions.delete(hub, alice)
        assert hub.state == HubState.DEPROVISIONING
        assert queued == [("deprovision", (hub.pk,), {"queue": "provisioning"})]

    def test_delete_pending_just_cancels(
        self, hub, alice, queued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            decisions.delete(hub, alice)
        assert hub.state == HubState.CANCELLED
        assert queued == []

    def test_delete_deleted_is_a_conflict(self, alice, queued):
        hub = HubFactory(owner=alice, state=HubState.DELETED)
        with pytest.raises(StateConflict):
            decisions.delete(hub, alice)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_two_admins_approving_at_once_provision_once(queued):
    from tests.factories import AdminFactory

    hub = HubFactory(state=HubState.PENDING)
    admins = [AdminFactory(username="admin1"), AdminFactory(username="admin2")]
    outcomes = race(
        *[
            lambda admin=admin: decisions.approve(Hub.objects.get(pk=hub.pk), admin)
            for admin in admins
        ],
        losing=(StateConflict,),
    )

    assert won_or_lost(outcomes) == ["lost", "won"]
    assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_two_requests_at_once_cannot_both_pass_the_per_owner_limits(alice, spec, queued):
    SelfServicePolicy.objects.update(max_live_hubs_per_owner=2)
    assert decisions.submit(alice, spec(slug="first")).state == HubState.APPROVED
    race(
        lambda: decisions.submit(alice, spec(slug="second")),
        lambda: decisions.submit(alice, spec(slug="third")),
        losing=(),
    )
    states = sorted(
        Hub.objects.filter(slug__in=["second", "third"]).values_list("state", flat=True)
    )
    assert states == [HubState.APPROVED, HubState.PENDING]
