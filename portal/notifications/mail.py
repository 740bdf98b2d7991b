"""Compose and send the e-mails about a hub, each at most once (see Notice).

A mail is rendered from three templates, ``emails/<kind>_subject.txt``, ``emails/<kind>.txt``
and ``emails/<kind>.html``, and goes to the hub's owner and co-owners (failures also to the
portal admins). Sending never raises: a transition is committed before its mail is sent, and an
unreachable mail server must not undo it or break the caller, so errors are logged and recorded
on the Notice.
"""

from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from portal.hubs import expiry
from portal.hubs.lifecycle import State
from portal.hubs.models import Collaborator, Hub, HubEvent
from portal.notifications.models import Notice

log = structlog.get_logger(__name__)

Kind = Notice.Kind


def portal_link(path: str) -> str:
    """An absolute link into the portal, for e-mails (no request to build it from)."""
    return settings.PORTAL_URL.rstrip("/") + path


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    unique = []
    for address in addresses:
        if address and address.lower() not in seen:
            seen.add(address.lower())
            unique.append(address)
    return unique


def recipients(hub: Hub, *, admins: bool = False) -> list[str]:
    """The owner's and co-owners' addresses, plus the portal admins' when `admins` is set."""
    people = [hub.owner] if hub.owner.is_active else []
    people += [
        c.user
        for c in hub.collaborators.filter(role=Collaborator.Role.CO_OWNER, user__is_active=True)
        .select_related("user")
        .order_by("user__username")
    ]
    addresses = [person.email for person in people]
    if admins:
        staff = get_user_model().objects.filter(is_staff=True, is_active=True).exclude(email="")
        addresses += staff.order_by("username").values_list("email", flat=True)
    return _unique(addresses)


def claim(hub: Hub, kind: str, key: str) -> Notice | None:
    """Record that this notice is being sent; None when it was claimed before (never twice)."""
    try:
        with transaction.atomic():  # a savepoint, so a duplicate does not spoil the caller's
            return Notice.objects.create(hub=hub, kind=kind, key=key)
    except IntegrityError:
        return None


def render(kind: str, context: Mapping[str, Any]) -> tuple[str, str, str]:
    """Subject, plain text and HTML of a notice."""
    subject = render_to_string(f"emails/{kind}_subject.txt", context)
    subject = " ".join(subject.split())  # one line, whatever the template's whitespace
    text = render_to_string(f"emails/{kind}.txt", context)
    html = render_to_string(f"emails/{kind}.html", context)
    return subject, text, html


def base_context(hub: Hub) -> dict[str, Any]:
    """What every e-mail may show: the hub, its page in the portal and the portal's address."""
    return {
        "hub": hub,
        "hub_page": portal_link(reverse("hubs:detail", args=[hub.pk])),
        "portal_url": settings.PORTAL_URL.rstrip("/"),
    }


def send(notice: Notice, context: Mapping[str, Any], *, admins: bool = False) -> Notice:
    """Render and send a claimed notice; record the result on it. Never raises."""
    hub = notice.hub
    to = recipients(hub, admins=admins)
    notice.recipients = "\n".join(to)
    if not to:
        notice.status, notice.detail = Notice.Status.SKIPPED, "Nobody with an e-mail address."
        notice.save(update_fields=["status", "detail", "recipients"])
        log.info("notice.skipped", hub_id=hub.pk, kind=notice.kind, why="no recipients")
        return notice
    try:
        subject, text, html = render(notice.kind, {**base_context(hub), **context})
        message = EmailMultiAlternatives(subject, text, settings.DEFAULT_FROM_EMAIL, to)
        message.attach_alternative(html, "text/html")
        message.send()
    except Exception as exc:
        # Logged without the SMTP settings: the password must never reach a log.
        log.exception("notice.failed", hub_id=hub.pk, kind=notice.kind, key=notice.key)
        notice.status, notice.detail = Notice.Status.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
    else:
        notice.status, notice.sent = Notice.Status.SENT, timezone.now()
        log.info("notice.sent", hub_id=hub.pk, kind=notice.kind, key=notice.key, to=len(to))
    notice.save(update_fields=["status", "detail", "recipients", "sent"])
    return notice


def notify(
    hub: Hub,
    kind: str,
    key: str,
    context: Mapping[str, Any] | None = None,
    *,
    admins: bool = False,
) -> Notice | None:
    """Send notice `kind` about `hub` unless one with the same key was sent; None if it was."""
    notice = claim(hub, kind, key)
    if notice is None:
        log.info("notice.duplicate", hub_id=hub.pk, kind=kind, key=key)
        return None
    return send(notice, context or {}, admins=admins)


# --- Transitions --------------------------------------------------------------------------------


def kind_for(event: HubEvent) -> str | None:
    """Which notice a transition sends, if any.

    Approval is announced once (re-approving a failed hub to retry it is not news), "running"
    when a hub comes up from provisioning (first start, resume, retry) but not after a change
    is applied (the change mails cover that), and expiring is announced by the expiry warnings.
    """
    to, source = event.to_state, event.from_state
    if to == State.APPROVED and source == State.PENDING:
        return Kind.APPROVED
    if to == State.RUNNING and source == State.PROVISIONING:
        return Kind.RUNNING
    return {
        State.REJECTED: Kind.REJECTED,
        State.FAILED: Kind.FAILED,
        State.SUSPENDED: Kind.SUSPENDED,
        State.DELETED: Kind.DELETED,
    }.get(State(to))


def notify_event(event_id: int) -> Notice | None:
    """Send the notice a recorded transition calls for (once per event)."""
    event = HubEvent.objects.select_related("hub__owner", "actor").filter(pk=event_id).first()
    kind = kind_for(event) if event else None
    if kind is None:
        return None
    context: dict[str, Any] = {"event": event, "reason": event.reason}
    if kind == Kind.SUSPENDED:
        context["data_kept_until"] = expiry.data_kept_until(event.hub, event.created)
    return notify(event.hub, kind, f"event:{event.pk}", context, admins=kind == Kind.FAILED)


# --- Changes (called by the versioned-changes services) -----------------------------------------


def notify_change(revision_or_hub: Any, decision: str, reason: str = "") -> None:
    """Tell the owner and co-owners that a change was approved or rejected, after commit.

    Pass the revision (anything with ``.hub`` and ``.pk``; ``.number`` is shown when present)
    or, without revisions, the hub itself. `decision` is "approved" or "rejected".
    """
    if decision not in ("approved", "rejected"):
        raise ValueError(f"decision must be 'approved' or 'rejected', not {decision!r}")
    kind = Kind.CHANGE_APPROVED if decision == "approved" else Kind.CHANGE_REJECTED
    hub = getattr(revision_or_hub, "hub", revision_or_hub)
    if isinstance(revision_or_hub, Hub):
        revision, key = None, f"change:{timezone.now().isoformat()}"
    else:
        revision, key = revision_or_hub, f"revision:{revision_or_hub.pk}"
    context = {
        "revision": revision,
        "revision_number": getattr(revision, "number", getattr(revision, "pk", None)),
        "reason": reason,
    }
    transaction.on_commit(lambda: notify(hub, kind, key, context), robust=True)
