"""The record of every e-mail the portal sent (or tried to send) about a hub."""

from django.db import models


class Notice(models.Model):
    """One e-mail about a hub, unique per (hub, kind, key) so it is never sent twice.

    The key says what the notice is about: ``event:<HubEvent id>`` for a transition,
    ``<end date>:<days>`` for an expiry warning, ``revision:<id>`` for a change decision. The row
    is claimed (inserted) before the mail goes out; a second run finds it and sends nothing.
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

    class Meta:
        ordering = ["created", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["hub", "kind", "key"], name="notice_once_per_key")
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for hub {self.hub_id} ({self.key}): {self.status}"
