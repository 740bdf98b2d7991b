"""submit/approve/reject/cancel/delete and the self-service policy."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from portal.hubs import services
from portal.hubs.lifecycle import State, StateConflict
from portal.hubs.models import Collaborator, GpuType, Hub, SelfServicePolicy
from portal.usage.models import GpuInventory
from tests.factories import HardwareOptionFactory, HubFactory, UserFactory
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
            hub = services.submit(alice, spec())

        assert hub.state == State.APPROVED
        assert hub.owner == alice
        assert [(e.from_state, e.to_state) for e in hub.events.all()] == [
            ("", State.PENDING),
            (State.PENDING, State.APPROVED),
        ]
        assert hub.events.first().actor == alice
        assert hub.events.last().actor is None  # the policy approved it
        assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]

    def test_spec_is_stored(self, alice, bob, spec, queued):
        carol = UserFactory(username="carol")
        hub = services.submit(
            alice,
            spec(co_owners="bob", members="carol", storage_options=[], wipe_home_allowed="on"),
        )
        assert hub.slug == "stats-101"
        assert hub.namespace == "hub-stats-101"
        assert hub.url == "https://stats-101.hubs.localhost"
        assert sorted(hub.hardware_options.values_list("name", flat=True)) == ["medium", "small"]
        assert list(hub.images.values_list("name", flat=True)) == ["scipy"]
        assert hub.wipe_home_allowed is True
        assert set(hub.collaborators.values_list("user__username", "role")) == {
            ("bob", Collaborator.Role.CO_OWNER),
            (carol.username, Collaborator.Role.MEMBER),
        }

    def test_beyond_policy_waits_for_an_admin(
        self, alice, spec, queued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            hub = services.submit(alice, spec(gpu_type="a100", gpus_per_user="4"))

        assert hub.state == State.PENDING
        assert "4 GPUs per user exceeds the self-service limit of 0" in hub.state_reason
        assert queued == []

    def test_invalid_spec_creates_nothing(self, alice, spec):
        with pytest.raises(services.InvalidSpec) as invalid:
            services.submit(alice, spec(slug="Not A Slug"))
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
        assert services.policy_violations(hub) == [
            "80 expected users exceeds the self-service limit of 50",
            "Large: CPU limit 8 exceeds the self-service limit of 4 CPU",
            "Large: memory 32 GiB exceeds the self-service limit of 16 GiB",
            "A period of 400 days exceeds the self-service limit of 120 days",
            "50 GiB home exceeds the self-service limit of 20 GiB",
            "500 GiB shared volume exceeds the self-service limit of 100 GiB",
            "Custom image ghcr.io/lab/analysis:1.2 needs an admin's approval",
        ]

    def test_policy_is_read_from_the_database(self, alice, spec, queued):
        policy = SelfServicePolicy.current()
        policy.max_gpus_per_user = 2
        policy.max_cpu_limit = Decimal("1")
        policy.save()
        h100 = GpuType.objects.get(name="h100")  # 40 users x 2 GPUs, all counted and free
        GpuInventory.objects.create(
            product=h100.node_label_value, allocatable=80, observed=timezone.now()
        )
        hub = services.submit(
            alice, spec(hardware_options=["small"], gpu_type="h100", gpus_per_user="2")
        )
        assert hub.state == State.APPROVED


class TestApprove:
    def test_admin_approves_and_provisioning_is_queued(
        self, hub, charlie, queued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            services.approve(hub, charlie, "GPUs are free in March")
        hub.refresh_from_db()
        assert hub.state == State.APPROVED
        assert hub.state_reason == "GPUs are free in March"
        event = hub.events.get()
        assert (event.actor, event.to_state) == (charlie, State.APPROVED)
        assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]

    def test_approving_twice_queues_once(
        self, hub, charlie, queued, django_capture_on_commit_callbacks
    ):
        stale = Hub.objects.get(pk=hub.pk)  # a second admin's page, loaded before the first click
        with django_capture_on_commit_callbacks(execute=True):
            services.approve(hub, charlie)
            with pytest.raises(StateConflict):
                services.approve(stale, charlie)
        assert len(queued) == 1
        assert hub.events.count() == 1

    def test_failed_hub_can_be_retried(
        self, alice, charlie, queued, django_capture_on_commit_callbacks
    ):
        hub = HubFactory(owner=alice, state=State.FAILED, state_reason="quota invalid")
        with django_capture_on_commit_callbacks(execute=True):
            services.approve(hub, charlie)
        assert hub.state == State.APPROVED
        assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]


class TestReject:
    def test_reject_with_reason(self, hub, charlie):
        services.reject(hub, charlie, "  No GPUs left this term.  ")
        hub.refresh_from_db()
        assert (hub.state, hub.state_reason) == (State.REJECTED, "No GPUs left this term.")
        assert hub.events.get().actor == charlie

    @pytest.mark.parametrize("reason", ["", "   ", None])
    def test_reject_without_reason_is_refused(self, hub, charlie, reason):
        with pytest.raises(services.ReasonRequired):
            services.reject(hub, charlie, reason)
        hub.refresh_from_db()
        assert hub.state == State.PENDING
        assert not hub.events.exists()

    def test_rejected_slug_can_be_requested_again(self, hub, charlie, alice, spec, queued):
        services.reject(hub, charlie, "Too big")
        again = services.submit(alice, spec(slug=hub.slug))
        assert again.slug == hub.slug and again.pk != hub.pk


class TestCancelAndDelete:
    def test_cancel_pending(self, hub, alice):
        services.cancel(hub, alice)
        assert hub.state == State.CANCELLED

    def test_cancel_running_is_a_conflict(self, alice):
        hub = HubFactory(owner=alice, state=State.RUNNING)
        with pytest.raises(StateConflict):
            services.cancel(hub, alice)

    def test_delete_running_deprovisions(self, alice, queued, django_capture_on_commit_callbacks):
        hub = HubFactory(owner=alice, state=State.RUNNING)
        with django_capture_on_commit_callbacks(execute=True):
            services.delete(hub, alice)
        assert hub.state == State.DEPROVISIONING
        assert queued == [("deprovision", (hub.pk,), {"queue": "provisioning"})]

    def test_delete_pending_just_cancels(
        self, hub, alice, queued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            services.delete(hub, alice)
        assert hub.state == State.CANCELLED
        assert queued == []

    def test_delete_deleted_is_a_conflict(self, alice, queued):
        hub = HubFactory(owner=alice, state=State.DELETED)
        with pytest.raises(StateConflict):
            services.delete(hub, alice)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_two_admins_approving_at_once_provision_once(queued):
    from tests.factories import AdminFactory

    hub = HubFactory(state=State.PENDING)
    admins = [AdminFactory(username="admin1"), AdminFactory(username="admin2")]
    outcomes = race(
        *[
            lambda admin=admin: services.approve(Hub.objects.get(pk=hub.pk), admin)
            for admin in admins
        ],
        losing=(StateConflict,),
    )

    assert won_or_lost(outcomes) == ["lost", "won"]
    assert queued == [("provision", (hub.pk,), {"queue": "provisioning"})]
