"""The audit log: one row per recorded action, kept apart from the objects it describes."""

from django.conf import settings
from django.db import models
from django.db.models.fields.json import KeyTransform


class AuditEvent(models.Model):
    """Who (actor, empty = the system) did what (action) to which object, when, from where.

    The actor's username is copied so the record survives the user's deletion; the object is
    named by type, id and a short text, not a foreign key, so it survives the object's too.
    """

    class Via(models.TextChoices):
        WEB = "web", "Web"
        API = "api", "API"
        ADMIN = "admin", "Django admin"
        TASK = "task", "Background task"
        SYSTEM = "system", "System (command line)"

    created = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_events",
    )
    actor_username = models.CharField(max_length=150, blank=True, db_index=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    via = models.CharField(max_length=10, choices=Via.choices, default=Via.SYSTEM)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]
        indexes = [
            models.Index(fields=["object_type", "object_id"], name="audit_object"),
            models.Index(fields=["action", "created"], name="audit_action_created"),
            models.Index(fields=["actor", "created"], name="audit_actor_created"),
            # The audit log's hub filter finds the rows of a hub by the id their details name.
            models.Index(KeyTransform("hub_id", "details"), name="audit_details_hub"),
        ]

    def __str__(self) -> str:
        who = self.actor_username or "system"
        return f"{self.created:%Y-%m-%d %H:%M:%S} {who} {self.action} {self.object_repr}"
