"""Run the hub watcher (portal/hubs/watcher.py) until SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import threading

import structlog
from django.core.management.base import BaseCommand

from portal.hubs.cluster import api_client
from portal.hubs.watcher import HubWatcher, identity, lease_for

log = structlog.get_logger(__name__)


class Command(BaseCommand):
    help = (
        "Follow the portal's Deployments and Namespaces and move hubs to running and deleted; "
        "with several running, one acts at a time (a Lease)."
    )

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        api = api_client()
        watcher = HubWatcher(api, lease=lease_for(api))
        log.info("watch.started", identity=identity())
        watcher.run(stop)
        log.info("watch.stopped", identity=identity())
