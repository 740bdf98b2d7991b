"""Record actions in the audit log: ``record(action, obj, **details)`` from anywhere.

The actor, source IP and channel come from the current request (put in a context variable by
``portal.audit.middleware.AuditContextMiddleware``) or from the Celery task being run; outside
both the action is the system's. Details are stored as JSON with anything secret-looking
removed: never pass tokens, passwords or keys.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from portal.audit.models import AuditEvent

if TYPE_CHECKING:
    from collections.abc import Iterator

    from django.http import HttpRequest

# Detail keys that could carry a secret are dropped, whatever the caller passed.
SECRET_KEYS = re.compile(r"token|secret|password|passwd|digest|key|hash|salt|nonce|code", re.I)


@dataclass
class Context:
    """Where the current action comes from: a request (actor read lazily) or a task."""

    request: HttpRequest | None = None
    via: str = AuditEvent.Via.SYSTEM
    ip: str | None = None


_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "audit_context", default=None
)


def current() -> Context:
    """The context of the action being done now (the system's when there is none)."""
    return _current.get() or Context()


def set_current(ctx: Context | None) -> None:
    """Make `ctx` the context until it is set again (for the Celery task signals)."""
    _current.set(ctx)


@contextmanager
def context(ctx: Context) -> Iterator[Context]:
    """Make `ctx` the current context for the duration of the block."""
    reset = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(reset)


def _networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in settings.TRUSTED_PROXIES]


def _is_trusted(address: str, networks: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def from_trusted_proxy(request: HttpRequest) -> bool:
    """Whether the request came straight from a proxy listed in TRUSTED_PROXIES (whose
    forwarded headers are believed)."""
    remote = request.META.get("REMOTE_ADDR") or ""
    networks = _networks()
    return bool(remote and networks and _is_trusted(remote, networks))


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address: REMOTE_ADDR, or X-Forwarded-For's last untrusted hop when the
    request came through a proxy listed in TRUSTED_PROXIES (a client can forge the rest)."""
    remote = request.META.get("REMOTE_ADDR") or None
    networks = _networks()
    if from_trusted_proxy(request):
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        for hop in reversed([h for h in hops if h]):
            if not _is_trusted(hop, networks):
                return hop if _valid_ip(hop) else remote
    return remote if remote and _valid_ip(remote) else None


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def via_for_path(path: str) -> str:
    """The channel of a request by its path: the Django admin, the API or the web UI."""
    if path.startswith("/admin/"):
        return AuditEvent.Via.ADMIN
    if path.startswith("/api/"):
        return AuditEvent.Via.API
    return AuditEvent.Via.WEB


def scrub(details: dict[str, Any]) -> dict[str, Any]:
    """The details as plain JSON, without keys that could hold a secret."""
    clean = {k: v for k, v in details.items() if not SECRET_KEYS.search(str(k))}
    return json.loads(json.dumps(clean, cls=DjangoJSONEncoder, default=str))


def request_actor(request: HttpRequest | None) -> Any:
    """The signed-in user of the request, or None."""
    user = getattr(request, "user", None) if request is not None else None
    return user if user is not None and user.is_authenticated else None


_UNSET = object()


def describe(obj: Any) -> tuple[str, str, str]:
    """An object's type label, id and short text, as the log names it."""
    meta = getattr(obj, "_meta", None)
    object_type = meta.label_lower if meta else type(obj).__name__.lower()
    object_id = str(getattr(obj, "pk", "") or "")
    try:
        text = str(obj)
    except Exception:  # e.g. a related row already deleted in a cascade
        text = f"{object_type} #{object_id}"
    return object_type, object_id, text


def record(
    action: str,
    obj: Any = None,
    *,
    actor: Any = _UNSET,
    object_ref: tuple[str, str, str] | None = None,
    **details: Any,
) -> AuditEvent:
    """Record `action` on `obj` by the current actor (or `actor`, None = the system).

    `object_ref` (type, id, text) names an object that is not at hand. Runs in the caller's
    transaction, so a rolled-back action leaves no record.
    """
    ctx = current()
    if actor is _UNSET:
        actor = request_actor(ctx.request)
    object_type, object_id, object_repr = object_ref or (
        describe(obj) if obj is not None else ("", "", "")
    )
    return AuditEvent.objects.create(
        actor=actor,
        actor_username=getattr(actor, "username", "") if actor is not None else "",
        source_ip=ctx.ip,
        via=ctx.via,
        action=action[:64],
        object_type=str(object_type)[:100],
        object_id=str(object_id)[:64],
        object_repr=str(object_repr)[:200],
        details=scrub(details),
    )
