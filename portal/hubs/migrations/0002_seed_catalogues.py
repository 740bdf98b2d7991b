"""Seed the catalogues and the self-service policy with sensible examples admins can edit."""

from decimal import Decimal

from django.db import migrations

HARDWARE = [
    # name, display name, cpu guarantee/limit, memory guarantee/limit (GiB)
    ("small", "Small", "0.5", "1", "1", "2"),
    ("medium", "Medium", "1", "2", "4", "8"),
    ("large", "Large", "2", "8", "16", "32"),
]
GPUS = [
    ("a100", "NVIDIA A100 80 GB", "NVIDIA-A100-SXM4-80GB"),
    ("h100", "NVIDIA H100 80 GB", "NVIDIA-H100-80GB-HBM3"),
]
IMAGES = [
    ("scipy", "Scientific Python", "quay.io/jupyter/scipy-notebook:python-3.11", "jupyterlab"),
    ("datascience", "Data science (Python, R, Julia)",
     "quay.io/jupyter/datascience-notebook:python-3.11", "jupyterlab"),
    ("rstudio", "RStudio", "docker.io/rocker/binder:4.4.2", "rstudio"),
    ("code-server", "VS Code in the browser", "docker.io/codercom/code-server:4.96.4", "vscode"),
]


def seed(apps, schema_editor):
    HardwareOption = apps.get_model("hubs", "HardwareOption")
    GpuType = apps.get_model("hubs", "GpuType")
    Image = apps.get_model("hubs", "Image")
    StorageOption = apps.get_model("hubs", "StorageOption")
    SelfServicePolicy = apps.get_model("hubs", "SelfServicePolicy")
    for name, display, cpu_g, cpu_l, mem_g, mem_l in HARDWARE:
        HardwareOption.objects.get_or_create(
            name=name,
            defaults=dict(
                display_name=display,
                cpu_guarantee=Decimal(cpu_g),
                cpu_limit=Decimal(cpu_l),
                mem_guarantee_gib=Decimal(mem_g),
                mem_limit_gib=Decimal(mem_l),
            ),
        )
    for name, display, label in GPUS:
        GpuType.objects.get_or_create(
            name=name, defaults=dict(display_name=display, node_label_value=label)
        )
    for name, display, reference, interface in IMAGES:
        Image.objects.get_or_create(
            name=name,
            defaults=dict(display_name=display, reference=reference, interface=interface),
        )
    # An example only: disabled until an admin points it at a real export.
    StorageOption.objects.get_or_create(
        name="project-nfs",
        defaults=dict(
            display_name="Project directory (NFS)",
            kind="nfs",
            server="nfs.example.org",
            path="/export/projects",
            mount_path="/mnt/project",
            read_only=True,
            enabled=False,
        ),
    )
    if not SelfServicePolicy.objects.exists():
        SelfServicePolicy.objects.create()


class Migration(migrations.Migration):
    dependencies = [("hubs", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
