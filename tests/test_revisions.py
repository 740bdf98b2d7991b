"""Versioned changes to a running hub: services, policy, rollback, diffs and concurrency.

Provisioning itself is not run here: the `queued` fixture records the provision_hub tasks a
change queues; tests/cluster/ applies what provision_hub does against the real control plane.
"""

import datetime

import pytest

from portal.hubs import hubspec, lifecycle, revisions
from portal.hubs.lifecycle import HubState, RevisionState
from portal.hubs.models import Hub, HubEvent, HubRevision, Member, SelfServicePolicy
from portal.hubs.services import changes, decisions
from tests.factories import AdminFactory, GpuTypeFactory, HubFactory, UserFactory
from tests.support import needs_postgresql, race, won_or_lost

pytestmark = pytest.mark.django_db

PROVISION = "provision"


def change(hub: Hub, **overrides) -> dict:
    """The hub's current spec as form data, with some fields changed."""
    data = revisions.form_data(revisions.spec_of_hub(hub))
    data.update(
        {key: str(value) if isinstance(value, int) else value for key, value in overrides.items()}
    )
    return data


def provisioned(hub: Hub) -> list:
    return [(PROVISION, (hub.pk,), {"queue": "provisioning"})]


class TestInsidePolicy:
    def test_applied_at_once(self, running_hub, alice, queued, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            revision = changes.request_change(
                running_hub, alice, change(running_hub, expected_users=20)
            )

        assert revision.number == 2
        assert revision.state == RevisionState.APPLIED
        assert revision.author == alice and revision.approver is None
        assert revision.reason == "Inside the self-service policy"
        assert revision.changed_fields == ["expected_users"]
        assert revision.applied is not None and revision.decided is not None
        running_hub.refresh_from_db()
        assert running_hub.state == HubState.UPDATING
        assert running_hub.expected_users == 20
        assert queued == provisioned(running_hub)
        first = running_hub.revisions.get(number=1)
        assert first.state == RevisionState.SUPERSEDED
        assert first.spec["expected_users"] == 10
        event = running_hub.events.get(to_state=HubState.UPDATING)
        assert (event.from_state, event.actor) == (HubState.RUNNING, alice)
        assert "#2" in event.reason

    def test_spec_and_people_written_to_the_hub(
        self, running_hub, alice, queued, django_capture_on_commit_callbacks
    ):
        SelfServicePolicy.objects.update(jobs_access_needs_approval=False)
        ta, student = UserFactory(username="ta"), UserFactory(username="student")
        Member.objects.create(hub=running_hub, user=student, role="co-owner")
        data = change(
            running_hub,
            images=["scipy", "rstudio"],
            hardware_options=["medium"],
            idle_timeout_minutes=120,
            jobs_access="true",
            co_owners="ta",
            members="student",
        )
        with django_capture_on_commit_callbacks(execute=True):
            changes.request_change(running_hub, alice, data)

        hub = Hub.objects.get(pk=running_hub.pk)
        assert sorted(hub.images.values_list("name", flat=True)) == ["rstudio", "scipy"]
        assert list(hub.hardware_options.values_list("name", flat=True)) == ["medium"]
        assert (hub.idle_timeout_minutes, hub.jobs_access) == (120, True)
        assert dict(hub.members.values_list("user__username", "role")) == {
            ta.username: "co-owner",
            student.username: "member",
        }
        assert revisions.spec_of_hub(hub) == hub.revisions.get(number=2).spec

    def test_co_owner_may_change_and_spec_is_json(self, running_hub, bob, queued):
        Member.objects.create(hub=running_hub, user=bob, role="co-owner")
        revision = changes.request_change(running_hub, bob, change(running_hub, kind="workshop"))
        assert revision.author == bob
        spec = HubRevision.objects.get(pk=revision.pk).spec
        assert set(revisions.SPEC_KEYS) == set(spec)
        assert spec["start_date"] == running_hub.start_date.isoformat()
        assert spec["images"] == ["scipy"] and spec["gpu_type"] is None

    def test_expiring_hub_extension_is_applied(
        self, alice, queued, django_capture_on_commit_callbacks
    ):
        hub = HubFactory(owner=alice, state=HubState.EXPIRING)
        new_end = (hub.end_date + datetime.timedelta(days=14)).isoformat()
        with django_capture_on_commit_callbacks(execute=True):
            revision = changes.request_change(hub, alice, change(hub, end_date=new_end))
        hub.refresh_from_db()
        assert revision.state == RevisionState.APPLIED
        assert hub.end_date.isoformat() == new_end
        assert hub.state == HubState.UPDATING
        moves = list(hub.events.values_list("from_state", "to_state"))
        assert moves[-2:] == [
            (HubState.EXPIRING, HubState.RUNNING),
            (HubState.RUNNING, HubState.UPDATING),
        ]
        assert queued == provisioned(hub)


class TestBeyondPolicy:
    def test_waits_then_admin_approves(
        self, running_hub, alice, charlie, queued, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            revision = changes.request_change(
                running_hub, alice, change(running_hub, expected_users=80)
            )
        assert revision.state == RevisionState.PENDING
        assert revision.violations == [
            {"field": "expected_users", "message": revision.violations[0]["message"]}
        ]
        assert "80 expected users" in revision.reason
        running_hub.refresh_from_db()
        assert (running_hub.state, running_hub.expected_users) == (HubState.RUNNING, 10)
        assert queued == []

        with django_capture_on_commit_callbacks(execute=True):
            revision = changes.approve_change(revision, charlie, "Big course")
        assert revision.state == RevisionState.APPLIED
        assert (revision.approver, revision.reason) == (charlie, "Big course")
        running_hub.refresh_from_db()
        assert (running_hub.state, running_hub.expected_users) == (HubState.UPDATING, 80)
        assert queued == provisioned(running_hub)

    def test_second_approval_is_a_conflict(self, running_hub, alice, charlie, queued):
        revision = changes.request_change(
            running_hub, alice, change(running_hub, expected_users=80)
        )
        changes.approve_change(revision, charlie)
        with pytest.raises(changes.ChangeNotAllowed, match="applied"):
            changes.approve_change(revision, charlie)
        assert running_hub.events.filter(to_state=HubState.UPDATING).count() == 1

    def test_reject_needs_a_reason(self, running_hub, alice, charlie, queued):
        revision = changes.request_change(
            running_hub, alice, change(running_hub, expected_users=80)
        )
        with pytest.raises(decisions.ReasonRequired):
            changes.reject_change(revision, charlie, "  ")
        revision = changes.reject_change(revision, charlie, "Not enough capacity")
        assert (revision.state, revision.reason, revision.approver) == (
            RevisionState.REJECTED,
            "Not enough capacity",
            charlie,
        )
        running_hub.refresh_from_db()
        assert (running_hub.state, running_hub.expected_users) == (HubState.RUNNING, 10)
        with pytest.raises(changes.ChangeNotAllowed, match="rejected"):
            changes.approve_change(revision, charlie)
        # Rejected: a new change may be asked for.
        assert changes.request_change(running_hub, alice, change(running_hub, expected_users=30))

    def test_gpu_needs_an_admin(self, running_hub, alice, queued):
        GpuTypeFactory(name="a100")
        revision = changes.request_change(
            running_hub, alice, change(running_hub, gpu_type="a100", gpus_per_user=1)
        )
        assert revision.state == RevisionState.PENDING
        # Beyond the policy (a GPU per user, and 10 seats), and no collection pass has counted
        # the cluster's A100s yet.
        fields = [v["field"] for v in revision.violations]
        assert fields == ["gpus_per_user", "max_gpus", "gpu_type"]

    def test_turning_on_jobs_access_waits_for_an_admin(self, running_hub, alice, queued):
        revision = changes.request_change(
            running_hub, alice, change(running_hub, jobs_access="true")
        )
        assert revision.state == RevisionState.PENDING
        assert [v["field"] for v in revision.violations] == ["jobs_access"]
        assert Hub.objects.get(pk=running_hub.pk).jobs_access is False

    def test_what_was_approved_once_stays_approved(self, alice, queued):
        # An admin approved 80 users; a longer idle timeout does not go back to the queue.
        hub = HubFactory(owner=alice, state=HubState.RUNNING, expected_users=80)
        revision = changes.request_change(hub, alice, change(hub, idle_timeout_minutes=90))
        assert revision.state == RevisionState.APPLIED
        lifecycle.mark_running(hub.pk)
        hub.refresh_from_db()
        more = changes.request_change(hub, alice, change(hub, expected_users=90))
        assert more.state == RevisionState.PENDING


class TestRefused:
    def test_only_one_open_change(self, running_hub, alice, queued):
        changes.request_change(running_hub, alice, change(running_hub, expected_users=80))
        with pytest.raises(changes.ChangeNotAllowed, match="already waiting"):
            changes.request_change(running_hub, alice, change(running_hub, expected_users=20))
        assert running_hub.revisions.filter(state="pending").count() == 1

    def test_database_allows_one_open_change(self, running_hub, alice):
        from django.db import IntegrityError, transaction

        HubRevision.objects.create(hub=running_hub, number=2, spec={}, created=running_hub.created)
        with pytest.raises(IntegrityError), transaction.atomic():
            HubRevision.objects.create(
                hub=running_hub, number=3, spec={}, state="approved", created=running_hub.created
            )

    def test_not_while_updating(self, running_hub, alice, queued):
        changes.request_change(running_hub, alice, change(running_hub, expected_users=20))
        with pytest.raises(changes.ChangeNotAllowed, match="applying a change"):
            changes.request_change(running_hub, alice, change(running_hub, expected_users=30))

    @pytest.mark.parametrize(
        "state",
        [
            HubState.PENDING,
            HubState.APPROVED,
            HubState.PROVISIONING,
            HubState.SUSPENDED,
            HubState.FAILED,
        ],
    )
    def test_only_running_hubs(self, alice, queued, state):
        hub = HubFactory(owner=alice, state=state)
        with pytest.raises(changes.ChangeNotAllowed, match="only a running hub"):
            changes.request_change(hub, alice, change(hub, expected_users=20))
        assert not hub.revisions.exists()

    def test_slug_cannot_change(self, running_hub, alice, queued):
        with pytest.raises(decisions.InvalidSpec) as invalid:
            changes.request_change(running_hub, alice, change(running_hub, slug="renamed"))
        assert "cannot change" in invalid.value.errors["slug"][0]

    def test_nothing_changed(self, running_hub, alice, queued):
        with pytest.raises(decisions.InvalidSpec) as invalid:
            changes.request_change(running_hub, alice, change(running_hub))
        assert "nothing to change" in invalid.value.errors["__all__"][0]

    def test_same_validation_as_a_request(self, running_hub, alice, queued):
        data = change(running_hub, expected_users=0, shared_volume_gib=5, images=[])
        with pytest.raises(decisions.InvalidSpec) as invalid:
            changes.request_change(running_hub, alice, data)
        assert {"expected_users", "shared_volume_gib", "images"} <= set(invalid.value.errors)

    def test_end_date_cannot_move_into_the_past(self, running_hub, alice, today, queued):
        yesterday = (today - datetime.timedelta(days=1)).isoformat()
        with pytest.raises(decisions.InvalidSpec) as invalid:
            changes.request_change(running_hub, alice, change(running_hub, end_date=yesterday))
        assert "end_date" in invalid.value.errors

    def test_a_start_date_in_the_past_may_stay(self, alice, today, queued):
        hub = HubFactory(
            owner=alice, state=HubState.RUNNING, start_date=today - datetime.timedelta(days=20)
        )
        revision = changes.request_change(hub, alice, change(hub, expected_users=20))
        assert revision.state == RevisionState.APPLIED


class TestRollback:
    def test_restores_an_earlier_spec(
        self, running_hub, alice, queued, django_capture_on_commit_callbacks
    ):
        changes.request_change(
            running_hub, alice, change(running_hub, expected_users=20, images=["scipy", "rstudio"])
        )
        lifecycle.mark_running(running_hub.pk)  # provisioning finished the update
        first = running_hub.revisions.get(number=1)

        with django_capture_on_commit_callbacks(execute=True):
            revision = changes.rollback(running_hub, alice, 1)

        assert revision.number == 3
        assert revision.rollback_of == first
        assert revision.spec == first.spec
        assert revision.state == RevisionState.APPLIED
        assert sorted(revision.changed_fields) == ["expected_users", "images"]
        hub = Hub.objects.get(pk=running_hub.pk)
        assert hub.state == HubState.UPDATING
        assert revisions.spec_of_hub(hub) == first.spec
        assert queued == provisioned(hub)
        states = dict(hub.revisions.values_list("number", "state"))
        assert states == {1: "superseded", 2: "superseded", 3: "applied"}

    def test_keeps_the_members_added_since(
        self, running_hub, alice, bob, queued, django_capture_on_commit_callbacks
    ):
        from portal.hubs import members

        changes.request_change(running_hub, alice, change(running_hub, expected_users=20))
        lifecycle.mark_running(running_hub.pk)
        members.add_member(running_hub, alice, {"username": bob.username, "role": "member"})

        with django_capture_on_commit_callbacks(execute=True):
            revision = changes.rollback(running_hub, alice, 1)

        assert revision.state == RevisionState.APPLIED
        hub = Hub.objects.get(pk=running_hub.pk)
        assert hub.expected_users == running_hub.expected_users
        assert list(hub.members.values_list("user__username", flat=True)) == [bob.username]

    def test_beyond_policy_rollback_waits(self, running_hub, alice, charlie, queued):
        SelfServicePolicy.objects.update(max_expected_users=5)
        # 10 users were fine when approved; after a change to 4, going back to 10 exceeds
        # what the current spec has, so the rollback waits for an admin like any change.
        changes.request_change(running_hub, alice, change(running_hub, expected_users=4))
        lifecycle.mark_running(running_hub.pk)
        revision = changes.rollback(running_hub, alice, 1)
        assert revision.state == RevisionState.PENDING
        assert revision.violations[0]["field"] == "expected_users"
        changes.approve_change(revision, charlie)
        running_hub.refresh_from_db()
        assert running_hub.expected_users == 10

    def test_refused_for_current_pending_and_unknown(self, running_hub, alice, queued):
        with pytest.raises(changes.ChangeNotAllowed, match="current spec"):
            changes.rollback(running_hub, alice, 1)
        pending = changes.request_change(running_hub, alice, change(running_hub, expected_users=80))
        with pytest.raises(changes.ChangeNotAllowed, match="never applied"):
            changes.rollback(running_hub, alice, pending.number)
        with pytest.raises(changes.ChangeNotAllowed, match="no revision"):
            changes.rollback(running_hub, alice, 42)


class TestInitialRevision:
    def test_recorded_from_the_approval(self, alice, charlie, queued):
        hub = HubFactory(owner=alice, state=HubState.PENDING)
        decisions.approve(hub, charlie, "Fine")
        first = changes.ensure_initial_revision(hub)
        assert (first.number, first.state, first.author, first.approver) == (
            1,
            RevisionState.APPLIED,
            alice,
            charlie,
        )
        assert first.spec == revisions.spec_of_hub(hub)
        assert changes.ensure_initial_revision(hub) == first  # idempotent

    def test_none_for_requests_never_approved(self, hub):
        assert changes.ensure_initial_revision(hub) is None
        assert not hub.revisions.exists()


class TestDiffs:
    def test_more_users_change_the_quota(self, running_hub):
        plan, diff = changes.preview_change(running_hub, change(running_hub, expected_users=20))
        assert [(f.field, f.old, f.new) for f in diff.fields] == [("expected_users", "10", "20")]
        by_kind = {o.kind: o for o in diff.objects}
        quota = by_kind["ResourceQuota"]
        assert quota.change == "changed"
        # The users' quota: one server per user.
        assert "-    pods: '10'" in quota.diff and "+    pods: '20'" in quota.diff
        assert quota.diff.startswith("--- a/hub-alice-course-users/ResourceQuota/hub-quota")
        assert not running_hub.revisions.filter(number__gt=1).exists()  # nothing saved
        assert plan.violations == []

    def test_gpus_add_the_gpu_resource(self, running_hub):
        GpuTypeFactory(name="a100")
        _, diff = changes.preview_change(
            running_hub, change(running_hub, gpu_type="a100", gpus_per_user=1)
        )
        added = [
            line
            for o in diff.objects
            for line in o.diff.splitlines()
            if line.startswith("+") and "nvidia.com/gpu" in line
        ]
        assert added, [o.diff for o in diff.objects]
        # Seats not given: one set of GPUs per server.
        assert {f.field for f in diff.fields} == {"gpu_type", "gpus_per_user", "max_gpus"}

    def test_jobs_access_adds_objects(self, running_hub):
        _, diff = changes.preview_change(running_hub, change(running_hub, jobs_access="true"))
        added = {o.kind for o in diff.objects if o.change == "added"}
        # Jobs need both: an account for their pods and a Role bound to it.
        assert {"ServiceAccount", "Role", "RoleBinding"} <= added, added

    def test_no_secret_values(self, running_hub, monkeypatch):
        """Neither the hub's login client secret nor any secret provisioning would generate
        reaches a preview: every generated value is made recognisable, so a render that
        generated or read real secrets would show them here."""
        import base64

        from portal.hubs.models import LoginClient
        from provisioning import render
        from provisioning.render import HubSecrets

        marker = "generated-secret-0f9e8d7c"
        monkeypatch.setattr(render.secrets, "token_hex", lambda nbytes=None: marker)
        LoginClient.objects.create(
            hub=running_hub,
            client_id="hub-alice-course",
            client_secret="login-secret-5a4b3c2d",
            registration_access_token="registration-token-1e2f3a4b",
            redirect_uri="https://alice-course.hubs.localhost/hub/oauth_callback",
        )
        leaked = [marker, "login-secret-5a4b3c2d", "registration-token-1e2f3a4b"]
        leaked += [base64.b64encode(value.encode()).decode() for value in leaked]

        rendered = revisions.rendered_objects(hubspec.from_hub(running_hub))
        _, diff = changes.preview_change(running_hub, change(running_hub, expected_users=20))
        shown = list(rendered.values()) + [o.diff for o in diff.objects]
        assert [value for value in leaked if any(value in text for text in shown)] == []
        secret = next(text for (kind, _, _), text in rendered.items() if kind == "Secret")
        for key in HubSecrets.KEYS.values():
            assert f"{key}: {revisions.REDACTED}" in secret

    def test_proposed_hub_renders_like_the_hub(self, running_hub):
        Member.objects.create(hub=running_hub, user=UserFactory(username="ta"), role="member")
        proposed = hubspec.from_revision(running_hub, revisions.spec_of_hub(running_hub))
        assert proposed == hubspec.from_hub(running_hub)
        assert revisions.rendered_objects(proposed) == revisions.rendered_objects(
            hubspec.from_hub(running_hub)
        )

    def test_removed_objects_are_listed(self, alice):
        hub = HubFactory(owner=alice, state=HubState.RUNNING, jobs_access=True)
        _, diff = changes.preview_change(hub, change(hub, jobs_access="false"))
        removed = [o for o in diff.objects if o.change == "removed"]
        assert removed
        assert all(
            line.startswith(("---", "+++", "@@", "-"))
            for o in removed
            for line in o.diff.splitlines()
        )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_two_admins_approving_a_change_at_once_apply_it_once(queued):
    owner = UserFactory(username="owner")
    hub = HubFactory(owner=owner, state=HubState.RUNNING)
    revision = changes.request_change(hub, owner, change(hub, expected_users=80))
    admins = [AdminFactory(username="admin1"), AdminFactory(username="admin2")]
    outcomes = race(
        *[
            lambda admin=admin: changes.approve_change(
                HubRevision.objects.get(pk=revision.pk), admin
            )
            for admin in admins
        ],
        losing=(changes.ChangeNotAllowed,),
    )

    assert won_or_lost(outcomes) == ["lost", "won"]
    assert queued == provisioned(hub)
    assert HubEvent.objects.filter(hub=hub, to_state=HubState.UPDATING).count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
@needs_postgresql
def test_two_changes_at_once_leave_one(queued):
    owner = UserFactory(username="owner")
    hub = HubFactory(owner=owner, state=HubState.RUNNING)
    changes.ensure_initial_revision(hub)
    outcomes = race(
        *[
            lambda users=users: changes.request_change(
                Hub.objects.get(pk=hub.pk), owner, change(hub, expected_users=users)
            )
            for users in (80, 90)
        ],
        losing=(changes.ChangeNotAllowed,),
    )

    assert won_or_lost(outcomes) == ["lost", "won"]
    assert HubRevision.objects.filter(hub=hub).count() == 2
