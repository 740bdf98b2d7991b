"""The record of every e-mail the portal sent (or tried to send) about a hub."""

from django.db import models


class Notice(models.Model):
    """One e-mail about a hub, unique per (hub, kind, key) so it is never sent twice.

    The key says what the notice is about: ``event:<HubEvent id>`` for a transition,
    ``<end date>:<days>`` for an expiry warning, ``revision:<id>`` for a change decision,
    ``run:<ServerRun id>:idle:<last activity>`` or ``run:<id>:age`` for a server's warning. The row
    is claimed (inserted) before the mail goes out; a second run finds it and sends nothing.
    The rendered message is kept on the row: a notice the mail server did not take is sent
    again, as it was, after a growing delay (`next_attempt`) until NOTICE_MAX_ATTEMPTS.
    """

    class Kind(models.TextChoices):
        APPROVED = "approved", "Request approved"
        REJECTED = "rejected", "Request rejected"
        RUNNING = "running", "Hub running"
        FAILED = "failed", "Hub failed"
        EXPIRY_WARNING = "expiry_warning", "Expiry warning"
        SUSPENDED = "suspended", "Hub suspended"
        DELETED = "deleted", "Hub deleted"
        CHANGE_APPROVED = "change_approved", "Change approved"
        CHANGE_REJECTED = "change_rejected", "Change rejected"
        SERVER_WARNING = "server_warning", "Server stops soon"

    class Status(models.TextChoices):
        PENDING = "pending", "Claimed, not sent yet"
        SENT = "sent", "Sent"
        FAILED = "failed", "Sending failed"
        SKIPPED = "skipped", "Not sent (superseded or nobody to tell)"

    hub = models.ForeignKey("hubs.Hub", on_delete=models.CASCADE, related_name="notices")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    key = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    recipients = models.TextField(blank=True, help_text="Addresses, one per line.")
    detail = models.TextField(blank=True, help_text="Why it was skipped, or the sending error.")
    created = models.DateTimeField(auto_now_add=True)
    sent = models.DateTimeField(null=True, blank=True)
    # The message as it was composed, so that a failed one is sent again unchanged.
    subject = models.TextField(blank=True)
    text = models.TextField(blank=True, help_text="The plain-text body.")
    html = models.TextField(blank=True, help_text="The HTML body.")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Times it was handed over.")
    next_attempt = models.DateTimeField(
        null=True,
        blank=True,
        db_index=True,
        help_text="When a failed notice is sent again; empty once sent or given up.",
    )

    class Meta:
        ordering = ["created", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["hub", "kind", "key"], name="notice_once_per_key")
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for hub {self.hub_id} ({self.key}): {self.status}"
