"""Audit records of hub people keep one name: `collaborator.*` records (from before the model
was renamed `Member`) become `member.*`, so a filter by action or object type finds them all."""

from django.db import migrations
from django.db.models import Value
from django.db.models.functions import Concat, Substr


def rename(apps, schema_editor, old: str, new: str) -> None:
    AuditEvent = apps.get_model("audit", "AuditEvent")
    AuditEvent.objects.filter(action__startswith=f"{old}.").update(
        action=Concat(Value(f"{new}."), Substr("action", len(old) + 2))
    )
    AuditEvent.objects.filter(object_type=f"hubs.{old}").update(object_type=f"hubs.{new}")


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_audit_events"), ("hubs", "0006_collaborator_becomes_member")]

    operations = [
        migrations.RunPython(
            lambda apps, editor: rename(apps, editor, "collaborator", "member"),
            lambda apps, editor: rename(apps, editor, "member", "collaborator"),
        )
    ]
