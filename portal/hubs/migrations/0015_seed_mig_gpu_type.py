"""Seed a MIG slice as a GPU type of its own: the A100's 1g.10gb profile under NVIDIA's "mixed"
strategy (its own extended resource and product label), as the local cluster's simulated node
`kwok-gpu-a100-mig` offers it (devcluster/nodes.yaml). Admins edit or disable it like any entry."""

from django.db import migrations

MIG = "nvidia.com/mig-1g.10gb"


def seed(apps, schema_editor):
    GpuType = apps.get_model("hubs", "GpuType")
    GpuType.objects.get_or_create(
        name="a100-mig-1g10gb",
        defaults=dict(
            display_name="NVIDIA A100 MIG 1g.10gb (a seventh of an A100)",
            resource_name=MIG,
            node_label_key=f"{MIG}.product",
            node_label_value="NVIDIA-A100-SXM4-80GB-MIG-1g.10gb",
        ),
    )


class Migration(migrations.Migration):
    dependencies = [("hubs", "0014_class_sessions")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
