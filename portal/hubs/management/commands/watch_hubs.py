"""Run the hub watcher (portal/hubs/watcher.py) until SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import threading

import structlog
from django.conf import settings
from django.core.management.base import BaseCommand

from portal.hubs.cluster import api_client
from portal.hubs.watcher import HubWatcher, identity, lease_for
from portal.monitoring import exposition

log = structlog.get_logger(__name__)


class Command(BaseCommand):
    help = (
        "Follow the portal's Deployments and Namespaces and move hubs to running and deleted; "
        "with several running, one acts at a time (a Lease). Serves its metrics on "
        "WATCHER_METRICS_PORT; `manage.py healthcheck watcher` tells whether it is alive."
    )

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        # The hubs this process moves to running are in its provisioning-duration histogram.
        exposition.reset()
        exposition.serve(settings.WATCHER_METRICS_PORT, settings.METRICS_LISTEN_ADDRESS)
        api = api_client()
        watcher = HubWatcher(api, lease=lease_for(api))
        log.info("watch.started", identity=identity())
        watcher.run(stop)
        log.info("watch.stopped", identity=identity())
