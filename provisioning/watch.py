"""Follow the portal's objects in the cluster (list, then watch), and a Lease so that one
watcher acts at a time.

A `Feed` lists one kind cluster-wide by label selector, then watches it from the list's
resourceVersion, and puts what it sees on a queue: `Listed` after every (re)list, `Changed`
per event. A watch that times out resumes from the last resourceVersion it saw (bookmarks
included); one that expired (410 Gone) or failed (the API server restarting, a dropped
connection) relists after a pause, so nothing missed stays missed. The feed also relists every
`relist_seconds`, however quiet the watch was. The number of API calls depends on time and
kinds, never on the number of hubs.
"""

from __future__ import annotations

import datetime
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from provisioning import k8s

log = structlog.get_logger(__name__)

# The list function (for watching) of each kind a feed follows, cluster-wide.
_LISTERS: dict[str, Callable[[client.ApiClient], Callable[..., Any]]] = {
    "Deployment": lambda api: client.AppsV1Api(api).list_deployment_for_all_namespaces,
    "Namespace": lambda api: client.CoreV1Api(api).list_namespace,
}


@dataclass(frozen=True)
class Listed:
    """Every object of the kind, as one list call returned them."""

    kind: str
    items: list[dict[str, Any]]


@dataclass(frozen=True)
class Changed:
    """One watch event: ADDED, MODIFIED or DELETED."""

    kind: str
    type: str
    object: dict[str, Any]


class Feed(threading.Thread):
    """List then watch one kind into `out`, until `stop()`."""

    def __init__(
        self,
        api: client.ApiClient,
        kind: str,
        label_selector: str,
        out: queue.Queue,
        watch_seconds: int = 60,
        relist_seconds: int = 300,
        pause_seconds: float = 1.0,
    ):
        super().__init__(name=f"feed-{kind}", daemon=True)
        self.api, self.kind, self.label_selector, self.out = api, kind, label_selector, out
        self.watch_seconds, self.relist_seconds = watch_seconds, relist_seconds
        self.pause_seconds = pause_seconds
        self.lists = 0  # how often it listed (for tests and logs)
        self._stopped = threading.Event()
        self._watch: watch.Watch | None = None

    def stop(self) -> None:
        self._stopped.set()
        if self._watch is not None:
            self._watch.stop()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._list_and_watch()
            except (k8s.ClusterError, ApiException, OSError, ValueError) as error:
                log.warning("watch.relist", kind=self.kind, error=str(error)[:300])
                self._stopped.wait(self.pause_seconds)
            except Exception as error:
                log.exception("watch.failed", kind=self.kind, error=str(error)[:300])
                self._stopped.wait(self.pause_seconds)

    def _list_and_watch(self) -> None:
        items, version = k8s.list_with_version(self.api, self.kind, self.label_selector)
        self.lists += 1
        self.out.put(Listed(self.kind, items))
        listed_at = time.monotonic()
        lister = _LISTERS[self.kind](self.api)
        while not self._stopped.is_set():
            if time.monotonic() - listed_at >= self.relist_seconds:
                return
            self._watch = watch.Watch()
            for event in self._watch.stream(
                lister,
                label_selector=self.label_selector,
                resource_version=version,
                timeout_seconds=self.watch_seconds,
                allow_watch_bookmarks=True,
                deserialize=False,
                # A connection that goes silent (not closed) must not hold the feed forever.
                _request_timeout=(10, self.watch_seconds + 15),
            ):
                kind, obj = event["type"], event["object"]
                if kind == "ERROR":
                    # 410 Gone: the version is too old to resume from.
                    raise k8s.ClusterError(
                        f"watch ended: {obj.get('message', obj)}", transient=True
                    )
                version = obj["metadata"]["resourceVersion"]
                if kind != "BOOKMARK":
                    self.out.put(Changed(self.kind, kind, obj))
                if self._stopped.is_set():
                    return


class Lease:
    """A coordination.k8s.io Lease that one holder renews; another takes it over only once it
    expired (`duration_seconds` without a renewal). Writes carry the resourceVersion they
    read, so two candidates never both win."""

    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        namespace: str,
        identity: str,
        duration_seconds: int = 15,
    ):
        self.coordination = client.CoordinationV1Api(api)
        self.name, self.namespace, self.identity = name, namespace, identity
        self.duration_seconds = duration_seconds

    def hold(self) -> bool:
        """Take or renew the lease; whether this candidate holds it now."""
        now = datetime.datetime.now(datetime.UTC)
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status != 404:
                raise k8s.classify(error) from error
            return self._create(now)
        spec = lease.spec
        mine = spec.holder_identity == self.identity
        renewed = spec.renew_time or spec.acquire_time
        duration = spec.lease_duration_seconds or self.duration_seconds
        expired = renewed is None or now - renewed > datetime.timedelta(seconds=duration)
        if not (mine or expired or not spec.holder_identity):
            return False
        if not mine:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity, spec.renew_time = self.identity, now
        spec.lease_duration_seconds = self.duration_seconds
        try:
            self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            if error.status == 409:  # another candidate wrote first
                return False
            raise k8s.classify(error) from error
        return True

    def release(self) -> None:
        """Give the lease up (on a clean shutdown), so another candidate need not wait."""
        try:
            lease = self.coordination.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as error:
            log.warning("lease.release_failed", error=k8s.api_message(error))

    def _create(self, now: datetime.datetime) -> bool:
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                acquire_time=now,
                renew_time=now,
                lease_duration_seconds=self.duration_seconds,
                lease_transitions=0,
            ),
        )
        try:
            self.coordination.create_namespaced_lease(self.namespace, body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise k8s.classify(error) from error
        return True
