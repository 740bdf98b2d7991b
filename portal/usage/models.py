"""Usage of hubs (per hub, user, hour and day), collection passes and gaps, prices, GPU
inventory.

Usage is allocation, not utilisation: what the pods of a hub requested (CPU, memory, GPUs by
type) and what its volumes hold, multiplied by the time they were observed running or bound.
Amounts are integers in small units so that sums are exact: CPU in millicore-seconds, memory
and storage in MiB-seconds, GPUs in GPU-seconds.

Rows: `UsageHour` (hub x user x hour x component x GPU type) is kept for
USAGE_HOURLY_RETENTION_DAYS; `UsageDay`, the same per day, for USAGE_RETENTION_DAYS. A user
with a server running all day writes 24 hour rows and 1 day row; 90 days of 1,000 hubs with
100 such users are 9 M day rows at most, and one hub's 90 days are at most 9,000 day rows per
component read through the (hub, day) index.
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models

from portal.hubs.models import GpuType, Hub


class Component(models.TextChoices):
    """What in a hub used the resources."""

    SERVER = "server", "User servers and homes"
    JOBS = "jobs", "Batch jobs"
    HUB = "hub", "Hub, proxy and shared volumes"


class UsageAmounts(models.Model):
    """The measured amounts shared by the hourly and daily tables."""

    # No database-level foreign keys: the collector writes tens of thousands of rows per pass
    # with ids it has just read, and deferred constraint triggers would double its time.
    # Deletions still cascade (hub) and null (user) through Django.
    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    # The JupyterHub user name from the pod ("" for the hub's own pods and unattributed jobs);
    # `user` is the portal user of that name, when there is one.
    username = models.CharField(max_length=150, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_constraint=False,
    )
    component = models.CharField(max_length=10, choices=Component.choices)
    # The node's `nvidia.com/gpu.product` label ("" when no GPUs were used).
    gpu_product = models.CharField(max_length=100, blank=True)
    cpu_millicore_seconds = models.BigIntegerField(default=0)
    memory_mib_seconds = models.BigIntegerField(default=0)
    gpu_seconds = models.BigIntegerField(default=0)
    storage_mib_seconds = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class UsageHour(UsageAmounts):
    """Usage of one hub by one user in one hour (UTC), per component and GPU type."""

    hour = models.DateTimeField(help_text="Start of the hour, UTC.")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hub", "hour", "username", "component", "gpu_product"],
                name="usage_hour_unique",
            )
        ]
        indexes = [
            models.Index(fields=["user", "hour"], name="usage_hour_user"),
            models.Index(fields=["hour"], name="usage_hour_hour"),
        ]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.username or '(hub)'} {self.hour:%Y-%m-%d %H:00}"


class UsageDay(UsageAmounts):
    """Usage of one hub by one user on one day (UTC), per component and GPU type."""

    day = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["hub", "day", "username", "component", "gpu_product"],
                name="usage_day_unique",
            )
        ]
        indexes = [
            models.Index(fields=["user", "day"], name="usage_day_user"),
            models.Index(fields=["day"], name="usage_day_day"),
        ]

    def __str__(self) -> str:
        return f"{self.hub_id} {self.username or '(hub)'} {self.day}"


class CollectionPass(models.Model):
    """One run of the collector: when (`at`, the pass's clock), what it saw and charged."""

    at = models.DateTimeField(db_index=True, help_text="The time the pass observed the cluster.")
    charged_from = models.DateTimeField(
        null=True, blank=True, help_text="Start of the interval charged; empty on the first pass."
    )
    duration_seconds = models.FloatField(default=0)
    api_calls = models.PositiveIntegerField(default=0)
    namespaces_seen = models.PositiveIntegerField(default=0)
    # Running pods and bound claims in this portal's hub namespaces.
    pods_seen = models.PositiveIntegerField(default=0)
    volumes_seen = models.PositiveIntegerField(default=0)
    rows_written = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at"]
        verbose_name_plural = "collection passes"

    def __str__(self) -> str:
        return f"Collection at {self.at:%Y-%m-%d %H:%M:%S}"


class CollectionGap(models.Model):
    """An interval with no usage recorded: the collector did not run (see recording.py)."""

    start = models.DateTimeField(db_index=True)
    end = models.DateTimeField()

    class Meta:
        ordering = ["-start"]

    def __str__(self) -> str:
        return f"Gap {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M}"

    @property
    def seconds(self) -> float:
        """Length of the gap."""
        return (self.end - self.start).total_seconds()


def _money(**kwargs) -> models.DecimalField:
    return models.DecimalField(
        max_digits=12,
        decimal_places=4,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
        **kwargs,
    )


class PriceList(models.Model):
    """Prices in USAGE_CURRENCY from `valid_from` (00:00 UTC) until the next list's date.

    A month of storage is 30 days (720 hours).
    """

    valid_from = models.DateField(unique=True)
    cpu_hour = _money(verbose_name="per CPU core-hour")
    memory_gib_hour = _money(verbose_name="per GiB-hour of memory")
    storage_gib_month = _money(verbose_name="per GiB-month of storage (30 days)")
    note = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-valid_from"]

    def __str__(self) -> str:
        return f"Prices from {self.valid_from}"


class GpuPrice(models.Model):
    """The price of one GPU-hour of one GPU type in a price list."""

    price_list = models.ForeignKey(PriceList, on_delete=models.CASCADE, related_name="gpu_prices")
    gpu_type = models.ForeignKey(GpuType, on_delete=models.CASCADE, related_name="+")
    gpu_hour = _money(verbose_name="per GPU-hour")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["price_list", "gpu_type"], name="gpu_price_once")
        ]

    def __str__(self) -> str:
        return f"{self.gpu_type} {self.gpu_hour}"


class GpuInventory(models.Model):
    """GPUs of one product in the cluster as the collector last saw them."""

    product = models.CharField(max_length=100, unique=True, help_text="nvidia.com/gpu.product")
    allocatable = models.PositiveIntegerField(default=0)
    in_use = models.PositiveIntegerField(default=0)
    observed = models.DateTimeField()

    class Meta:
        verbose_name_plural = "GPU inventory"

    def __str__(self) -> str:
        return f"{self.product}: {self.in_use}/{self.allocatable}"
