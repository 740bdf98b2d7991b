"""The hub watcher: one process (`manage.py watch_hubs`) that follows the portal's labelled
Deployments and Namespaces and moves hubs to running and to deleted as the cluster reports
them, instead of one polling task per hub every few seconds.

Two feeds (provisioning/watch.py) keep an in-memory copy of the portal's Deployments and
Namespaces, relisting after any error (an API server restart, an expired watch) and every
few minutes. Events mark the hubs they concern; every `HUB_WATCH_RESYNC_SECONDS` the watcher
also goes over every hub the database says is provisioning, updating or deprovisioning (one
query), so a hub whose event was missed, or whose copy was relisted, moves all the same. A hub
still not running says why (the scheduler's reason, one pod list for such a hub per resync)
and fails once it has waited as long as the readiness checks would have.

Only the holder of a Lease acts: with several watchers running, the others wait to take over.
The cluster's hub ids are unique within one portal only: an object counts for a hub when its
namespace is one of that hub's names too.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections import defaultdict
from contextlib import suppress
from typing import Any

import structlog
from django.conf import settings
from django.utils import timezone

from portal.hubs import lifecycle, tasks
from portal.hubs.lifecycle import READINESS_STATES, HubState, LifecycleError
from portal.hubs.models import Hub
from portal.monitoring import heartbeat
from provisioning import k8s
from provisioning.render import LABEL_HUB_ID, MANAGED_BY, selector
from provisioning.sync import is_own_namespace
from provisioning.watch import Changed, Feed, Lease, Listed

log = structlog.get_logger(__name__)

ALL_OBJECTS = f"app.kubernetes.io/managed-by={MANAGED_BY}"
KINDS = ("Deployment", "Namespace")


def identity() -> str:
    """Who holds the lease: host and process."""
    return f"{socket.gethostname()}-{os.getpid()}"


class HubWatcher:
    """The watcher's state and its steps; `run` loops over `step` until stopped."""

    def __init__(self, api, lease: Lease | None = None, resync_seconds: float | None = None):
        self.api = api
        self.lease = lease
        self.resync_seconds = (
            settings.HUB_WATCH_RESYNC_SECONDS if resync_seconds is None else resync_seconds
        )
        self.events: queue.Queue = queue.Queue()
        self.feeds: list[Feed] = []
        # The cluster as the feeds last told it: deployments by namespace, namespaces by name.
        self.deployments: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.listed: set[str] = set()
        self.dirty: set[int] = set()
        self.leading = lease is None
        self._last_resync = 0.0
        self._last_lease = 0.0
        self.moved: list[tuple[int, str]] = []  # (hub id, new state), for logs and tests

    # --- feeds ---------------------------------------------------------------------------

    def start_feeds(self, **options) -> None:
        self.feeds = [Feed(self.api, kind, ALL_OBJECTS, self.events, **options) for kind in KINDS]
        for feed in self.feeds:
            feed.start()

    def stop_feeds(self) -> None:
        for feed in self.feeds:
            feed.stop()

    def relist(self) -> None:
        """List both kinds now (two calls), as a feed does after an error."""
        for kind in KINDS:
            items, _ = k8s.list_with_version(self.api, kind, ALL_OBJECTS)
            self.take(Listed(kind, items))

    def take(self, message: Listed | Changed) -> None:
        """Update the copy of the cluster with what a feed saw, and mark the hubs concerned."""
        if isinstance(message, Listed):
            self.listed.add(message.kind)
            if message.kind == "Deployment":
                self.deployments = defaultdict(dict)
                for item in message.items:
                    meta = item["metadata"]
                    self.deployments[meta["namespace"]][meta["name"]] = item
            else:
                self.namespaces = {item["metadata"]["name"]: item for item in message.items}
            self._last_resync = 0.0  # a fresh copy: look at every hub again
            return
        meta = message.object["metadata"]
        if message.kind == "Deployment":
            by_name = self.deployments[meta["namespace"]]
            if message.type == "DELETED":
                by_name.pop(meta["name"], None)
            else:
                by_name[meta["name"]] = message.object
        elif message.type == "DELETED":
            self.namespaces.pop(meta["name"], None)
            self.deployments.pop(meta["name"], None)
        else:
            self.namespaces[meta["name"]] = message.object
        hub_id = (meta.get("labels") or {}).get(LABEL_HUB_ID, "")
        if hub_id.isdigit():
            self.dirty.add(int(hub_id))

    # --- the loop ------------------------------------------------------------------------

    def step(self, timeout: float = 1.0) -> None:
        """Take what the feeds sent for up to `timeout` seconds, then act on the hubs it
        concerns (and on every watched hub when a resync is due) if this watcher leads."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                self.take(self.events.get(timeout=max(remaining, 0.0)))
            except queue.Empty:
                break
            if remaining <= 0:
                break
        self._keep_lease()
        if not self.leading or set(KINDS) - self.listed:
            return
        due = time.monotonic() - self._last_resync >= self.resync_seconds
        if due:
            self.resync()
        elif self.dirty:
            hubs = Hub.objects.filter(pk__in=self.dirty).only("state", "slug", "state_changed")
            self.dirty = set()
            for hub in hubs:
                self.look_at(hub, resync=False)

    def resync(self) -> None:
        """Look at every hub that waits for the cluster, whatever events said."""
        self._last_resync = time.monotonic()
        self.dirty = set()
        watched = (*READINESS_STATES, HubState.DEPROVISIONING)
        for hub in Hub.objects.filter(state__in=watched).only("state", "slug", "state_changed"):
            self.look_at(hub, resync=True)

    def run(self, stop: threading.Event) -> None:
        alive = heartbeat.Every("watcher", settings.HEALTH_HEARTBEAT_SECONDS)
        self.start_feeds()
        try:
            while not stop.is_set():
                self.step(timeout=1.0)
                alive.tick()
        finally:
            heartbeat.stopped("watcher")
            self.stop_feeds()
            if self.lease is not None and self.leading:
                self.lease.release()

    def _keep_lease(self) -> None:
        if self.lease is None:
            return
        every = max(self.lease.duration_seconds / 3, 1)
        if time.monotonic() - self._last_lease < every:
            return
        self._last_lease = time.monotonic()
        try:
            leading = self.lease.hold()
        except Exception as error:
            log.warning("watch.lease_unknown", error=str(error)[:300])
            leading = False
        if leading != self.leading:
            log.info("watch.leading" if leading else "watch.following", identity=identity())
            self._last_resync = 0.0
        self.leading = leading

    # --- one hub -------------------------------------------------------------------------

    def own_namespaces(self, hub: Hub) -> list[dict[str, Any]]:
        return [
            item for item in self.namespaces.values() if is_own_namespace(item, hub.slug, hub.pk)
        ]

    def look_at(self, hub: Hub, resync: bool) -> None:
        if hub.state in READINESS_STATES:
            self._readiness(hub, resync)
        elif hub.state == HubState.DEPROVISIONING:
            self._deletion(hub)

    def _waited_too_long(self, hub: Hub) -> bool:
        return (
            hub.state_changed is not None
            and timezone.now() - hub.state_changed > tasks.readiness_window()
        )

    def _readiness(self, hub: Hub, resync: bool) -> None:
        deployments = [
            item
            for item in self.deployments.get(hub.namespace, {}).values()
            if (item["metadata"].get("labels") or {}).get(LABEL_HUB_ID) == str(hub.pk)
        ]
        ready, detail = tasks.deployments_available(deployments)
        if ready:
            with suppress(LifecycleError):
                lifecycle.mark_running(hub.pk)
                self.moved.append((hub.pk, HubState.RUNNING))
                log.info("hub.running", hub_id=hub.pk, by="watch")
            return
        if not resync:
            return
        try:
            pods = k8s.list_objects(self.api, "Pod", hub.namespace, selector(hub.pk))
        except k8s.ClusterError as error:
            log.warning("watch.pods_unread", hub_id=hub.pk, error=error.message)
            return
        waiting = tasks.waiting_for_room(pods)
        lifecycle.note_waiting(hub.pk, waiting)
        if self._waited_too_long(hub):
            window = tasks.readiness_window_text()
            self._fail(hub, f"Not ready after {window}: {waiting or detail}")

    def _fail(self, hub: Hub, reason: str) -> None:
        with suppress(LifecycleError):
            lifecycle.mark_failed(hub.pk, reason)
            self.moved.append((hub.pk, HubState.FAILED))

    def _deletion(self, hub: Hub) -> None:
        remaining = self.own_namespaces(hub)
        if not remaining:
            with suppress(LifecycleError):
                lifecycle.mark_deleted(hub.pk)
                self.moved.append((hub.pk, HubState.DELETED))
                log.info("hub.deleted", hub_id=hub.pk, by="watch")
            return
        if self._waited_too_long(hub):
            phase = remaining[0].get("status", {}).get("phase", "unknown")
            name = remaining[0]["metadata"]["name"]
            self._fail(hub, f"{name} still {phase} after {tasks.readiness_window_text()}")


def lease_for(api) -> Lease:
    return Lease(
        api,
        settings.HUB_WATCH_LEASE,
        settings.HUB_WATCH_LEASE_NAMESPACE,
        identity(),
        duration_seconds=settings.HUB_WATCH_LEASE_SECONDS,
    )
