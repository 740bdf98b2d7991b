"""The Celery broker (Redis) as probes and metrics see it: reachable, and how much waits."""

from __future__ import annotations

import redis
from django.conf import settings
from kombu.transport.redis import PRIORITY_STEPS, Channel

from portal.celery import app


def connect(timeout: float) -> redis.Redis:
    """A client of the broker Celery uses that gives up after `timeout` seconds (connecting
    or reading)."""
    return redis.Redis.from_url(
        app.conf.broker_url, socket_timeout=timeout, socket_connect_timeout=timeout
    )


def queues() -> list[str]:
    """The queues the portal's tasks are routed to, and Celery's default one."""
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    return sorted(routed | {"celery"})


def queue_lengths(client: redis.Redis, names: list[str]) -> dict[str, int]:
    """Messages waiting in each queue (one round trip): kombu keeps a list per queue and
    priority step, the queue's own name for the default priority."""
    keys = {
        name: [name if step == 0 else f"{name}{Channel.sep}{step}" for step in PRIORITY_STEPS]
        for name in names
    }
    pipe = client.pipeline(transaction=False)
    for name in names:
        for key in keys[name]:
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {name: sum(next(lengths) for _ in keys[name]) for name in names}
