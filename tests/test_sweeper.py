"""The sweeper re-queues lost work a bounded number of times (no cluster needed: only the
hand-over of the re-queued tasks to the broker is recorded)."""

import datetime
from unittest import mock

import pytest
from django.utils import timezone

from portal.hubs import tasks
from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub, HubEvent
from tests.factories import HubFactory

pytestmark = pytest.mark.django_db


def test_the_sweeper_requeues_lost_work_a_bounded_number_of_times_then_fails_it(settings):
    long_ago = timezone.now() - datetime.timedelta(hours=1)
    lost = HubFactory(state=HubState.APPROVED)
    fresh = HubFactory(state=HubState.APPROVED)
    leaving = HubFactory(state=HubState.DEPROVISIONING)
    updating = HubFactory(state=HubState.UPDATING)
    Hub.objects.filter(pk__in=[lost.pk, leaving.pk, updating.pk]).update(state_changed=long_ago)
    queued = []
    with (
        mock.patch.object(
            tasks.provision_hub, "apply_async", lambda args: queued.append(("p", args))
        ),
        mock.patch.object(
            tasks.deprovision_hub, "apply_async", lambda args: queued.append(("d", args))
        ),
    ):
        assert tasks.sweep_stuck_hubs() == {"provision": 2, "deprovision": 1, "failed": 0}
        assert sorted(queued) == [("d", (leaving.pk,)), ("p", (lost.pk,)), ("p", (updating.pk,))]
        assert fresh.pk not in [args[0] for _, args in queued]
        # A re-queued hub gets time to finish before it is re-queued again.
        queued.clear()
        assert tasks.sweep_stuck_hubs() == {"provision": 1, "deprovision": 0, "failed": 0}
        assert queued == [("p", (lost.pk,))]

        # Re-queues that never made progress: after SWEEP_MAX_REQUEUES the hub fails.
        HubEvent.objects.filter(reason__startswith="Re-queued").update(created=long_ago)
        for _ in range(settings.SWEEP_MAX_REQUEUES - 1):
            tasks.sweep_stuck_hubs()
            HubEvent.objects.filter(reason__startswith="Re-queued").update(created=long_ago)
        assert tasks.sweep_stuck_hubs()["failed"] == 2
    for hub in (leaving, updating):
        hub.refresh_from_db()
        assert hub.state == HubState.FAILED
        assert "re-queued 3 times without progress" in hub.state_reason
