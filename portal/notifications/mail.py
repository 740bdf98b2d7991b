"""Compose and send the e-mails about a hub, each at most once (see Notice).

A mail is rendered from three templates, ``emails/<kind>_subject.txt``, ``emails/<kind>.txt``
and ``emails/<kind>.html``, and goes to the hub's owner and co-owners (failures also to the
portal admins). Sending never raises: a transition is committed before its mail is sent, and an
unreachable mail server must not undo it or break the caller, so errors are logged and recorded
on the Notice, which keeps the rendered message; the beat task `retry_notices` sends failed
ones again after a doubling delay (NOTICE_RETRY_SECONDS, NOTICE_MAX_ATTEMPTS attempts in all).
"""

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from portal.hubs.lifecycle import HubState
from portal.hubs.models import Hub, HubEvent, Member
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
        for c in hub.members.filter(role=Member.Role.CO_OWNER, user__is_active=True)
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


def send(
    notice: Notice,
    context: Mapping[str, Any],
    *,
    admins: bool = False,
    to: list[str] | None = None,
) -> Notice:
    """Render a claimed notice, keep the message on it and send it (to the owners, or to the
    addresses `to` names). Never raises."""
    hub = notice.hub
    to = _unique(to) if to is not None else recipients(hub, admins=admins)
    notice.recipients = "\n".join(to)
    if not to:
        notice.status, notice.detail = Notice.Status.SKIPPED, "Nobody with an e-mail address."
        notice.save(update_fields=["status", "detail", "recipients"])
        log.info("notice.skipped", hub_id=hub.pk, kind=notice.kind, why="no recipients")
        return notice
    try:
        notice.subject, notice.text, notice.html = render(
            notice.kind, {**base_context(hub), **context}
        )
    except Exception as exc:
        # A template that does not render will not render next time either: no retry.
        log.exception("notice.unrenderable", hub_id=hub.pk, kind=notice.kind, key=notice.key)
        notice.status, notice.detail = Notice.Status.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
        notice.save(update_fields=["status", "detail", "recipients"])
        return notice
    return deliver(notice)


def retry_delay(attempts: int) -> timedelta:
    """How long after its `attempts`-th failed attempt a notice is sent again (doubling)."""
    return timedelta(seconds=settings.NOTICE_RETRY_SECONDS * 2 ** (attempts - 1))


def deliver(notice: Notice, now: datetime | None = None) -> Notice:
    """Hand a rendered notice to the mail server; on failure schedule the next attempt (or give
    up after NOTICE_MAX_ATTEMPTS). Records the result on the notice and never raises."""
    now = now or timezone.now()
    message = EmailMultiAlternatives(
        notice.subject, notice.text, settings.DEFAULT_FROM_EMAIL, notice.recipients.split()
    )
    message.attach_alternative(notice.html, "text/html")
    notice.attempts += 1
    try:
        message.send()
    except Exception as exc:
        # Logged without the SMTP settings: the password must never reach a log.
        retry = notice.attempts < settings.NOTICE_MAX_ATTEMPTS
        notice.next_attempt = now + retry_delay(notice.attempts) if retry else None
        log.warning(
            "notice.failed",
            hub_id=notice.hub_id,
            kind=notice.kind,
            key=notice.key,
            attempt=notice.attempts,
            error=type(exc).__name__,
            retry_at=notice.next_attempt.isoformat() if retry else None,
        )
        notice.status, notice.detail = Notice.Status.FAILED, f"{type(exc).__name__}: {exc}"[:2000]
    else:
        notice.status, notice.sent, notice.next_attempt = Notice.Status.SENT, now, None
        notice.detail = ""
        log.info(
            "notice.sent",
            hub_id=notice.hub_id,
            kind=notice.kind,
            key=notice.key,
            to=len(notice.recipients.split()),
            attempt=notice.attempts,
        )
    notice.save(
        update_fields=[
            "status",
            "detail",
            "recipients",
            "sent",
            "subject",
            "text",
            "html",
            "attempts",
            "next_attempt",
        ]
    )
    return notice


def retry_failed(now: datetime | None = None, limit: int = 100) -> int:
    """Send again the failed notices whose next attempt is due (oldest first, at most `limit`);
    returns how many went out. Rows are locked and skipped when locked, so two workers running
    this at once never send one notice twice. The first failure ends the run: the mail server
    is most likely still down, and the rest stay due for the next run rather than each waiting
    out EMAIL_TIMEOUT now (the failed one moves back in the order, its delay having grown)."""
    now = now or timezone.now()
    sent = 0
    with transaction.atomic():
        due = (
            Notice.objects.select_for_update(skip_locked=True)
            .select_related("hub")
            .filter(status=Notice.Status.FAILED, next_attempt__lte=now)
            .order_by("next_attempt", "pk")[:limit]
        )
        for notice in due:
            if deliver(notice, now).status != Notice.Status.SENT:
                break
            sent += 1
    return sent


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
    if to == HubState.APPROVED and source == HubState.PENDING:
        return Kind.APPROVED
    if to == HubState.RUNNING and source == HubState.PROVISIONING:
        return Kind.RUNNING
    return {
        HubState.REJECTED: Kind.REJECTED,
        HubState.FAILED: Kind.FAILED,
        HubState.SUSPENDED: Kind.SUSPENDED,
        HubState.DELETED: Kind.DELETED,
    }.get(HubState(to))


def notify_event(event_id: int) -> Notice | None:
    """Send the notice a recorded transition calls for (once per event)."""
    event = HubEvent.objects.select_related("hub__owner", "actor").filter(pk=event_id).first()
    kind = kind_for(event) if event else None
    if kind is None:
        return None
    context: dict[str, Any] = {"event": event, "reason": event.reason}
    if kind == Kind.SUSPENDED:
        context["data_kept_until"] = event.hub.data_kept_until(event.created)
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
