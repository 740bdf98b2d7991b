"""Hubs, their specs and events, the admin-curated catalogues and the self-service policy."""

import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from portal.hubs.lifecycle import (
    FINAL_STATES,
    OPEN_REVISION_STATES,
    HubState,
    RevisionState,
)
from portal.hubs.validators import SLUG_MAX_LENGTH, validate_image_reference, validate_slug

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

# --- Catalogues ---------------------------------------------------------------------------------


class CatalogueQuerySet(models.QuerySet):
    """Queries shared by all catalogues."""

    def enabled(self) -> "CatalogueQuerySet":
        """Entries a requester may pick."""
        return self.filter(enabled=True)


class CatalogueEntry(models.Model):
    """Common fields of a catalogue entry: a stable name, a display name, an on/off switch."""

    name = models.SlugField(
        max_length=50, unique=True, help_text="Stable identifier, used by the API."
    )
    display_name = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True, help_text="Disabled entries cannot be requested.")

    objects = CatalogueQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["display_name"]

    def __str__(self) -> str:
        return self.display_name


class HardwareOption(CatalogueEntry):
    """A server size users of a hub may pick: CPU and memory guarantee and limit."""

    cpu_guarantee = models.DecimalField(max_digits=6, decimal_places=2, help_text="CPU cores.")
    cpu_limit = models.DecimalField(max_digits=6, decimal_places=2, help_text="CPU cores.")
    mem_guarantee_gib = models.DecimalField(max_digits=7, decimal_places=2)
    mem_limit_gib = models.DecimalField(max_digits=7, decimal_places=2)
    # Server policy: how long a server of this size may idle and run (see server_policy.py).
    # A server with a GPU gets the shorter GPU limits: an idle GPU is the costliest waste.
    idle_timeout_minutes = models.PositiveIntegerField(
        default=120,
        validators=[MinValueValidator(5)],
        help_text="Servers without a GPU stop after this long idle, unless the hub's owner "
        "chose another limit (at most the maximum below).",
    )
    max_idle_timeout_minutes = models.PositiveIntegerField(
        default=480,
        validators=[MinValueValidator(5)],
        help_text="The longest idle limit a hub's owner may choose for servers without a GPU.",
    )
    gpu_idle_timeout_minutes = models.PositiveIntegerField(
        default=30,
        validators=[MinValueValidator(5)],
        verbose_name="GPU idle timeout minutes",
        help_text="Servers with a GPU stop after this long idle; owners may only shorten it.",
    )
    max_age_hours = models.PositiveIntegerField(
        default=24,
        validators=[MinValueValidator(1)],
        help_text="Servers without a GPU stop this long after they started, active or not; "
        "owners may only shorten it.",
    )
    gpu_max_age_hours = models.PositiveIntegerField(
        default=8,
        validators=[MinValueValidator(1)],
        verbose_name="GPU max age hours",
        help_text="The same for servers with a GPU.",
    )
    age_extension_hours = models.PositiveIntegerField(
        default=4,
        help_text="How much longer a user may keep a server past its maximum age, once, with "
        "'keep running' (0: never).",
    )

    class Meta(CatalogueEntry.Meta):
        ordering = ["cpu_limit", "mem_limit_gib", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(idle_timeout_minutes__lte=models.F("max_idle_timeout_minutes")),
                name="hardware_idle_timeout_within_maximum",
                violation_error_message="The idle timeout is longer than its maximum.",
            ),
            models.CheckConstraint(
                condition=Q(cpu_guarantee__lte=models.F("cpu_limit")),
                name="hardware_cpu_guarantee_within_limit",
            ),
            models.CheckConstraint(
                condition=Q(mem_guarantee_gib__lte=models.F("mem_limit_gib")),
                name="hardware_mem_guarantee_within_limit",
            ),
        ]

    def describe_limits(self) -> str:
        """Return e.g. "stops after 120 min idle (30 with a GPU), runs at most 24 h (8 with a
        GPU)"."""
        return (
            f"stops after {self.idle_timeout_minutes} min idle "
            f"({self.gpu_idle_timeout_minutes} with a GPU), runs at most "
            f"{self.max_age_hours} h ({self.gpu_max_age_hours} with a GPU)"
        )

    def describe(self) -> str:
        """Return e.g. "1-2 CPU, 4-8 GiB"."""
        return (
            f"{self.cpu_guarantee.normalize():f}-{self.cpu_limit.normalize():f} CPU, "
            f"{self.mem_guarantee_gib.normalize():f}-{self.mem_limit_gib.normalize():f} GiB"
        )


class GpuType(CatalogueEntry):
    """A kind of GPU: the extended resource to request and the node label that selects it."""

    resource_name = models.CharField(max_length=100, default="nvidia.com/gpu")
    node_label_key = models.CharField(max_length=100, default="nvidia.com/gpu.product")
    node_label_value = models.CharField(
        max_length=100, help_text="Value of the node label, e.g. NVIDIA-A100-SXM4-80GB."
    )

    @property
    def node_selector(self) -> dict[str, str]:
        """The node selector that places a server on a node with this GPU."""
        return {self.node_label_key: self.node_label_value}


class Image(CatalogueEntry):
    """A container image users of a hub may start, with the interface it serves."""

    class Interface(models.TextChoices):
        JUPYTERLAB = "jupyterlab", "JupyterLab"
        RSTUDIO = "rstudio", "RStudio"
        VSCODE = "vscode", "VS Code (code-server)"
        DESKTOP = "desktop", "Desktop (noVNC)"

    # The URL path a server of this interface opens at (KubeSpawner's default_url).
    DEFAULT_URLS = {
        Interface.JUPYTERLAB: "/lab",
        Interface.RSTUDIO: "/rstudio",
        Interface.VSCODE: "/vscode",
        Interface.DESKTOP: "/desktop",
    }

    reference = models.CharField(max_length=255, validators=[validate_image_reference])
    interface = models.CharField(
        max_length=20, choices=Interface.choices, default=Interface.JUPYTERLAB
    )

    class PodSecurity(models.TextChoices):
        RESTRICTED = "restricted", "Restricted (non-root, no capabilities)"
        BASELINE = "baseline", "Baseline (needs more: shown to the admin who approves a hub)"

    pod_security = models.CharField(
        max_length=20,
        choices=PodSecurity.choices,
        default=PodSecurity.RESTRICTED,
        help_text=(
            "The Pod Security level the image runs under. A hub with a baseline image has "
            "baseline enforced in its users' namespace."
        ),
    )

    @property
    def default_url(self) -> str:
        """The path a server started from this image opens at."""
        return self.DEFAULT_URLS[self.Interface(self.interface)]


class StorageOption(CatalogueEntry):
    """External storage a hub may mount, e.g. an NFS project directory."""

    class Kind(models.TextChoices):
        NFS = "nfs", "NFS export"
        PVC = "pvc", "Volume from a storage class"

    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.NFS)
    storage_class = models.CharField(max_length=100, blank=True, help_text="For kind pvc.")
    server = models.CharField(max_length=255, blank=True, help_text="For kind nfs.")
    path = models.CharField(max_length=255, blank=True, help_text="Export path for kind nfs.")
    allowed_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="+",
        help_text="Who may request it; with no users and no groups, anyone.",
    )
    allowed_groups = models.TextField(
        blank=True,
        help_text="IdP groups whose members may request it, one per line or comma-separated.",
    )
    mount_path = models.CharField(max_length=255, default="/mnt/data")
    read_only = models.BooleanField(default=True)

    @property
    def group_names(self) -> set[str]:
        return {g.strip() for g in self.allowed_groups.replace(",", "\n").splitlines() if g.strip()}

    @property
    def restricted(self) -> bool:
        return bool(self.group_names) or self.allowed_users.exists()

    def allows(self, user) -> bool:
        """Whether `user` may request this storage: anyone when it names no users or groups,
        else the users it names and members of the IdP groups it names."""
        groups = self.group_names
        if not groups and not self.allowed_users.exists():
            return True
        if user is None:
            return False
        if self.allowed_users.filter(pk=user.pk).exists():
            return True
        return bool(groups & set(idp_groups(user)))


class SelfServicePolicy(models.Model):
    """The limits inside which a request is approved without an admin (one row is used)."""

    max_expected_users = models.PositiveIntegerField(default=50)
    max_cpu_limit = models.DecimalField(
        max_digits=6, decimal_places=2, default=Decimal(4), help_text="CPU cores per server."
    )
    max_mem_limit_gib = models.DecimalField(
        max_digits=7, decimal_places=2, default=Decimal(16), help_text="GiB per server."
    )
    max_gpus_per_user = models.PositiveSmallIntegerField(
        default=0, help_text="0 means any GPU request needs an admin."
    )
    max_gpus_per_hub = models.PositiveIntegerField(
        default=8, help_text="GPU seats of one hub: the GPUs its users hold at once."
    )
    max_period_days = models.PositiveIntegerField(default=120)
    max_home_gib = models.PositiveIntegerField(default=20)
    max_shared_gib = models.PositiveIntegerField(default=100)
    custom_images_need_approval = models.BooleanField(default=True)
    # Per owner, over all of their live hubs (the one asked for included); each hub counts
    # with its quota: what its users may hold at most.
    max_live_hubs_per_owner = models.PositiveIntegerField(default=5)
    max_owner_cpu = models.PositiveIntegerField(
        default=256, help_text="CPU cores (limits) over all of an owner's live hubs."
    )
    max_owner_mem_gib = models.PositiveIntegerField(
        default=1024, help_text="GiB of memory (limits) over all of an owner's live hubs."
    )
    max_owner_gpus = models.PositiveIntegerField(
        default=8, help_text="GPUs of any type over all of an owner's live hubs."
    )
    max_owner_storage_gib = models.PositiveIntegerField(
        default=4096, help_text="GiB of volumes over all of an owner's live hubs."
    )
    jobs_access_needs_approval = models.BooleanField(
        default=True,
        help_text=(
            "Kubernetes API access for batch jobs lets members run their own pods in the hub's "
            "namespace; by default an admin decides who gets it."
        ),
    )
    allowed_custom_registries = models.TextField(
        blank=True,
        default="quay.io\nghcr.io\ndocker.io",
        help_text="Registries custom images may come from, one per line. Empty allows none.",
    )

    class Meta:
        verbose_name = "self-service policy"
        verbose_name_plural = "self-service policy"

    def __str__(self) -> str:
        return "Self-service policy"

    @classmethod
    def current(cls) -> "SelfServicePolicy":
        """Return the policy in force: the first row, else the defaults (strictest sensible)."""
        return cls.objects.order_by("pk").first() or cls()

    @property
    def registries(self) -> list[str]:
        """Allowed custom image registries as a list."""
        return [line.strip().lower() for line in self.allowed_custom_registries.split() if line]


# --- Hubs ---------------------------------------------------------------------------------------


def idp_groups(user: "AbstractBaseUser | AnonymousUser") -> list[str]:
    """The IdP groups the provider confirmed for the user within OIDC_RIGHTS_MAX_AGE_SECONDS
    (none for local accounts, and none once they lapsed: portal/accounts/rights.py)."""
    from portal.accounts.rights import current_groups

    return current_groups(user)


def all_servers_gpus(users: int, servers_per_user: int, gpus_per_server: int) -> int:
    """GPUs for every server of every user at once: the most GPU seats a hub can use."""
    return (users or 0) * (servers_per_user or 1) * (gpus_per_server or 0)


def gpu_seats(max_gpus: int | None, users: int, servers_per_user: int, gpus: int) -> int:
    """The seats a hub row holds: none without GPUs; when not given, one set of GPUs per
    server (what every hub had before seats existed)."""
    if not gpus:
        return 0
    return max_gpus or all_servers_gpus(users, servers_per_user, gpus)


class HubQuerySet(models.QuerySet):
    """Queries on hubs, including the one rule of who may see which hub."""

    def visible_to(
        self, user: "AbstractBaseUser | AnonymousUser", *, as_admin: bool = True
    ) -> "HubQuerySet":
        """Hubs the user may see: admins all, others what they own or collaborate on.

        `as_admin=False`: what an admin sees as a user (a staff user's token without the
        admin scope, portal.accounts.tokens.admin_powers)."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff and as_admin:
            return self.all()
        # Subqueries, not joins: no duplicate rows, so no DISTINCT over every column.
        member = Q(owner=user) | Q(pk__in=Member.objects.filter(user=user).values("hub_id"))
        groups = idp_groups(user)
        if groups:
            member |= Q(pk__in=GroupGrant.objects.filter(group__in=groups).values("hub_id"))
        return self.filter(member)

    def live(self) -> "HubQuerySet":
        """Hubs that still hold their slug."""
        return self.exclude(state__in=FINAL_STATES)


class Hub(models.Model):
    """A requested JupyterHub and its spec; lives in namespace hub-<slug>.

    States (see lifecycle.TRANSITIONS): pending -> approved -> provisioning -> running
    -> (updating -> running) -> expiring -> suspended -> deprovisioning -> deleted; also
    rejected, cancelled and failed (retryable). `state` changes only through
    lifecycle.transition(); `state_reason` says why the hub is where it is.
    """

    class Kind(models.TextChoices):
        COURSE = "course", "Course"
        RESEARCH = "research", "Research group"
        WORKSHOP = "workshop", "Workshop"

    class SharedVolumeMode(models.TextChoices):
        NONE = "none", "No shared volume"
        READ_ONLY = "ro", "Read-only for members"
        READ_WRITE = "rw", "Read-write for members"

    display_name = models.CharField(max_length=100)
    slug = models.CharField(
        max_length=SLUG_MAX_LENGTH,
        validators=[validate_slug],
        help_text="Lowercase letters, digits and hyphens; gives the URL and the namespace.",
    )
    description = models.TextField(blank=True, help_text="Purpose of the hub.")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.COURSE)
    start_date = models.DateField()
    end_date = models.DateField()
    expected_users = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(5000)]
    )
    notebooks_per_user = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(10)],
        help_text="1 for a single server, more for named servers.",
    )
    hardware_options = models.ManyToManyField(HardwareOption, related_name="hubs")
    gpu_type = models.ForeignKey(
        GpuType, null=True, blank=True, on_delete=models.PROTECT, related_name="hubs"
    )
    gpus_per_user = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(8)], verbose_name="GPUs per user"
    )
    # GPU seats: the hub's users hold at most this many GPUs at once, however many they are;
    # the quota, the capacity calendar and the cost estimate count these, not users x GPUs.
    max_gpus = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(10000)],
        verbose_name="GPU seats",
        help_text=(
            "How many GPUs the hub's users hold at once, whatever their number "
            "(empty: one set per server, users x servers x GPUs per server)."
        ),
    )
    images = models.ManyToManyField(Image, blank=True, related_name="hubs")
    custom_image = models.CharField(
        max_length=255,
        blank=True,
        validators=[validate_image_reference],
        help_text="Optional image of your own, e.g. ghcr.io/lab/analysis:1.2.",
    )
    home_size_gib = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    wipe_home_allowed = models.BooleanField(
        default=False, help_text="Users may wipe their home directory when starting a server."
    )
    shared_volume_gib = models.PositiveIntegerField(
        default=0, validators=[MaxValueValidator(10000)], verbose_name="shared volume size (GiB)"
    )
    shared_volume_mode = models.CharField(
        max_length=4, choices=SharedVolumeMode.choices, default=SharedVolumeMode.NONE
    )
    storage_options = models.ManyToManyField(StorageOption, blank=True, related_name="hubs")
    # The owner's server policy; each server option's limits cap it (server_policy.py).
    idle_timeout_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(10), MaxValueValidator(7 * 24 * 60)],
        help_text="Empty: each server option's own limit. Longer than an option allows "
        "counts as that option's maximum.",
    )
    max_server_age_hours = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(30 * 24)],
        help_text="Stop servers this long after they started, active or not. Empty: each "
        "server option's own limit; you may only shorten it.",
    )
    jobs_access = models.BooleanField(
        default=False, help_text="Members may run batch jobs through the Kubernetes API."
    )
    open_egress = models.BooleanField(
        default=False,
        help_text=(
            "An admin's choice: user servers and jobs of this hub reach private and cluster "
            "addresses too, not only DNS, the hub and the public internet."
        ),
    )

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="hubs"
    )
    state = models.CharField(max_length=20, choices=HubState.choices, default=HubState.PENDING)
    state_reason = models.TextField(blank=True, help_text="Why the hub is in its state.")
    state_changed = models.DateTimeField(auto_now_add=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    # The fields a requester fills in (the request form, the API and revisions use these).
    SPEC_FIELDS = (
        "display_name",
        "slug",
        "description",
        "kind",
        "start_date",
        "end_date",
        "expected_users",
        "notebooks_per_user",
        "hardware_options",
        "gpu_type",
        "gpus_per_user",
        "max_gpus",
        "images",
        "custom_image",
        "home_size_gib",
        "wipe_home_allowed",
        "shared_volume_gib",
        "shared_volume_mode",
        "storage_options",
        "idle_timeout_minutes",
        "max_server_age_hours",
        "jobs_access",
    )

    objects = HubQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        constraints = [
            # A slug is free again once its hub is deleted, rejected or cancelled.
            models.UniqueConstraint(
                fields=["slug"],
                condition=~Q(state__in=sorted(FINAL_STATES)),
                name="hub_slug_unique_while_live",
                violation_error_message="This slug is already taken.",
            ),
            models.CheckConstraint(
                condition=Q(end_date__gte=models.F("start_date")), name="hub_period_ordered"
            ),
            # A GPU server needs a seat for each of its GPUs; no GPUs, no seats.
            models.CheckConstraint(
                condition=(Q(gpus_per_user=0) & Q(max_gpus=0))
                | (Q(gpus_per_user__gt=0) & Q(max_gpus__gte=models.F("gpus_per_user"))),
                name="hub_gpu_seats_hold_a_server",
                violation_error_message="GPU seats must hold at least one GPU server.",
            ),
        ]
        indexes = [models.Index(fields=["state", "created"])]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.slug})"

    def save(self, *args, **kwargs) -> None:
        self.max_gpus = gpu_seats(
            self.max_gpus, self.expected_users, self.notebooks_per_user, self.gpus_per_user
        )
        super().save(*args, **kwargs)

    @property
    def servers(self) -> int:
        """How many servers the hub's users may run at once (its quota's servers)."""
        return self.expected_users * self.notebooks_per_user

    @property
    def gpu_servers(self) -> int:
        """How many GPU servers its GPU seats hold at once; 0 without GPUs."""
        if not (self.gpu_type_id and self.gpus_per_user):
            return 0
        return self.max_gpus // self.gpus_per_user

    @property
    def namespace(self) -> str:
        """The Kubernetes namespace the hub lives in (its hub, proxy and Secret)."""
        return f"hub-{self.slug}"

    @property
    def users_namespace(self) -> str:
        """The namespace of what the hub's users run (servers, jobs, their volumes)."""
        return f"hub-{self.slug}-users"

    @property
    def url(self) -> str:
        """Where users reach the hub."""
        return f"https://{self.slug}.{settings.HUBS_DOMAIN}"

    @property
    def period_days(self) -> int:
        """Length of the usage period in days, both ends included."""
        return (self.end_date - self.start_date).days + 1

    def ends_at(self) -> datetime.datetime:
        """The moment the hub's usage period is over: midnight after its end date (TIME_ZONE)."""
        day_after = self.end_date + datetime.timedelta(days=1)
        return timezone.make_aware(datetime.datetime.combine(day_after, datetime.time.min))

    def data_kept_until(
        self, suspended_at: datetime.datetime | None = None
    ) -> datetime.datetime | None:
        """When the hub, suspended at `suspended_at` (default: its suspension), is deleted.

        The grace period (EXPIRY_GRACE_DAYS) counts from the suspension, but never from before
        the end of the usage period, so a hub suspended early for any reason still gets the
        whole grace after its end. None for a hub that is not suspended."""
        if suspended_at is None:
            if self.state != HubState.SUSPENDED:
                return None
            suspended_at = self.state_changed
        grace = datetime.timedelta(days=settings.EXPIRY_GRACE_DAYS)
        return max(suspended_at, self.ends_at()) + grace

    def can_manage(self, user: "AbstractBaseUser", *, as_admin: bool = True) -> bool:
        """Owner, co-owners (also through an IdP group) and admins may manage the hub
        (`as_admin=False`: admins only as users would)."""
        if not user.is_authenticated:
            return False
        if (user.is_staff and as_admin) or user.pk == self.owner_id:
            return True
        if self.members.filter(user=user, role=Member.Role.CO_OWNER).exists():
            return True
        groups = idp_groups(user)
        return (
            bool(groups)
            and self.group_grants.filter(group__in=groups, role=Member.Role.CO_OWNER).exists()
        )


class HubEvent(models.Model):
    """One state transition of a hub: from, to, who (empty = the system), why, when."""

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=20, choices=HubState.choices, blank=True)
    to_state = models.CharField(max_length=20, choices=HubState.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="hub_events",
    )
    reason = models.TextField(blank=True)
    created = models.DateTimeField()

    class Meta:
        ordering = ["created", "pk"]

    def __str__(self) -> str:
        return f"{self.hub.slug}: {self.from_state or '—'} → {self.to_state}"


class LoginClient(models.Model):
    """The OAuth client a hub's users log in with, registered by the portal at the identity
    provider (RFC 7591) and deleted there with the hub (RFC 7592).

    Holds credentials: never shown in pages, the API, the Django admin or logs.
    """

    hub = models.OneToOneField(Hub, on_delete=models.CASCADE, related_name="login_client")
    client_id = models.CharField(max_length=255)
    client_secret = models.TextField()
    redirect_uri = models.CharField(max_length=500)
    # Where and with which token the client is read, changed and deleted (RFC 7592).
    registration_client_uri = models.CharField(max_length=500, blank=True)
    registration_access_token = models.TextField(blank=True)
    registered = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.hub.slug}: {self.client_id}"


class HubRevision(models.Model):
    """One version of a hub's spec: requested, decided by policy or an admin, then applied.

    States (see lifecycle.REVISION_TRANSITIONS): pending (waits for an admin) -> approved ->
    applied -> superseded (a later revision was applied); pending -> rejected. Revision 1 is
    the spec the hub was approved with. Its spec holds every field of Hub.SPEC_FIELDS
    (catalogue entries by name, dates as ISO strings) plus co_owners and members (usernames).
    """

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    spec = models.JSONField()
    changed_fields = models.JSONField(
        default=list, blank=True, help_text="Spec fields that differ from the spec it replaced."
    )
    violations = models.JSONField(
        default=list,
        blank=True,
        help_text="How the change exceeds the policy: [{field, message}].",
    )
    state = models.CharField(
        max_length=20, choices=RevisionState.choices, default=RevisionState.PENDING
    )
    reason = models.TextField(blank=True, help_text="Why the revision is in its state.")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="hub_revisions",
    )
    approver = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="approved_hub_revisions",
        help_text="Empty for changes inside the self-service policy.",
    )
    rollback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="rollbacks"
    )
    created = models.DateTimeField()
    decided = models.DateTimeField(null=True, blank=True)
    applied = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["hub", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["hub", "number"], name="hub_revision_number_unique"),
            # The database, not a check-then-save, keeps a hub to one open change.
            models.UniqueConstraint(
                fields=["hub"],
                condition=Q(state__in=["pending", "approved"]),
                name="hub_revision_one_open_change",
                violation_error_message="This hub already has a change waiting.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hub.slug} #{self.number} ({self.get_state_display()})"

    @property
    def is_open(self) -> bool:
        """Waiting for an admin or being applied."""
        return self.state in OPEN_REVISION_STATES


# --- Members: tiers, invitations, group grants ---------------------------------------------------


class MemberTier(models.Model):
    """What a hub's members in this tier may use: server options, GPUs, images, the shared
    volume (read-only or read-write) and the jobs role.

    An empty set of hardware options or images means "everything the hub offers", so a tier
    keeps working when a change adds or drops options. Each hub has one default tier (for
    members without one); co-owners always get everything.
    """

    class SharedAccess(models.TextChoices):
        READ_ONLY = "ro", "Read-only"
        READ_WRITE = "rw", "Read-write"

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="tiers")
    name = models.SlugField(max_length=40, help_text="e.g. students, staff.")
    description = models.CharField(max_length=200, blank=True)
    hardware_options = models.ManyToManyField(
        HardwareOption,
        blank=True,
        related_name="tiers",
        help_text="Server options this tier may use; none selected means all.",
    )
    gpu_access = models.BooleanField(
        default=True, help_text="May start servers with the hub's GPUs."
    )
    images = models.ManyToManyField(
        Image,
        blank=True,
        related_name="tiers",
        help_text="Images this tier may use; none means all (custom image too).",
    )
    shared_access = models.CharField(
        max_length=2, choices=SharedAccess.choices, default=SharedAccess.READ_ONLY
    )
    jobs_access = models.BooleanField(
        default=False, help_text="Servers get the jobs role (when the hub has jobs access)."
    )
    is_default = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["hub", "-is_default", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["hub", "name"],
                name="member_tier_name_unique_per_hub",
                violation_error_message="This hub already has a tier of that name.",
            ),
            models.UniqueConstraint(
                fields=["hub"], condition=Q(is_default=True), name="member_tier_one_default"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} on {self.hub.slug}"


class Member(models.Model):
    """A user who may use a hub, with a role (co-owners manage it, members use it) and, for
    members, a tier (empty means the hub's default tier)."""

    class Role(models.TextChoices):
        CO_OWNER = "co-owner", "Co-owner"
        MEMBER = "member", "Member"

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="hub_memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    tier = models.ForeignKey(
        MemberTier, null=True, blank=True, on_delete=models.SET_NULL, related_name="members"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["hub", "user"], name="member_once_per_hub")]

    def __str__(self) -> str:
        return f"{self.user} ({self.get_role_display()}) on {self.hub.slug}"


class Invitation(models.Model):
    """An e-mail invitation to a hub: a link with a secret token (stored as its SHA-256) that
    expires, can be revoked and is accepted once, by a signed-in user whose identity provider
    verified the invited address, or by anyone holding the link when the inviter chose so."""

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Member.Role.choices, default=Member.Role.MEMBER)
    tier = models.ForeignKey(
        MemberTier, null=True, blank=True, on_delete=models.SET_NULL, related_name="invitations"
    )
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        on_delete=models.SET_NULL,
        related_name="sent_invitations",
    )
    anyone_with_link = models.BooleanField(
        default=False,
        help_text="Anyone signed in who holds the link may accept it; otherwise only a user "
        "whose identity provider verified the invited e-mail address.",
    )
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="accepted_invitations",
    )
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.hub.slug}"

    def status(self, now=None) -> str:
        """pending, accepted, revoked or expired."""
        from django.utils import timezone

        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= (now or timezone.now()):
            return "expired"
        return "pending"


class GroupGrant(models.Model):
    """Every member of an IdP group may use the hub, with a role and a tier."""

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="group_grants")
    group = models.CharField(max_length=200, help_text="The group's name in the IdP's claim.")
    role = models.CharField(max_length=10, choices=Member.Role.choices, default=Member.Role.MEMBER)
    tier = models.ForeignKey(
        MemberTier, null=True, blank=True, on_delete=models.SET_NULL, related_name="group_grants"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["group"]
        constraints = [
            models.UniqueConstraint(
                fields=["hub", "group"],
                name="group_grant_once_per_hub",
                violation_error_message="This group already has access to the hub.",
            )
        ]

    def __str__(self) -> str:
        return f"group {self.group} ({self.role}) on {self.hub.slug}"


class ServerRun(models.Model):
    """One run of a user's server in a hub, as the server policy watched it.

    A run is named by its user, server name and start time (a restarted server is a new run).
    It remembers the warnings sent (once per idle stretch, once for its age), whether its user
    extended it past its maximum age (once), the GPU time it held while idle, and, once the
    policy stopped it, why and the GPU hours that saved; `stop_seen` turns true when its user
    was told on their next visit.
    """

    class StopReason(models.TextChoices):
        IDLE = "idle", "Idle for longer than its limit"
        AGE = "age", "Older than its maximum age"

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="server_runs")
    username = models.CharField(max_length=255)
    server_name = models.CharField(max_length=255, blank=True)
    started = models.DateTimeField()
    profile = models.CharField(max_length=63, blank=True)
    gpus = models.PositiveSmallIntegerField(default=0)
    last_activity = models.DateTimeField()
    observed = models.DateTimeField(help_text="When the policy last looked at the server.")
    idle_warned_for = models.DateTimeField(
        null=True, blank=True, help_text="The last activity an idle warning was sent after."
    )
    age_warned = models.BooleanField(default=False)
    extended = models.BooleanField(default=False, help_text="Kept past its maximum age.")
    idle_gpu_seconds = models.PositiveBigIntegerField(
        default=0, help_text="GPU-seconds held while idle, in idle stretches already over."
    )
    stopped = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=10, choices=StopReason.choices, blank=True)
    gpu_hours_saved = models.FloatField(default=0)
    stop_seen = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["hub", "username", "server_name", "started"], name="server_run_once"
            )
        ]
        indexes = [models.Index(fields=["hub", "stopped"])]

    def __str__(self) -> str:
        name = f"{self.username}/{self.server_name}" if self.server_name else self.username
        return f"{name} on {self.hub_id} since {self.started:%Y-%m-%d %H:%M}"


# --- Classes that start warm ---------------------------------------------------------------------


def validate_time_zone(name: str) -> None:
    """An IANA time zone name, e.g. Europe/Amsterdam."""
    import zoneinfo

    from django.core.exceptions import ValidationError

    if name not in zoneinfo.available_timezones():
        raise ValidationError(f"{name!r} is not a time zone name such as Europe/Amsterdam.")


class ClassSession(models.Model):
    """A class the hub's owner declares: one-off or weekly, at a time in a time zone, with how
    many users attend (and how many of them on GPU servers). Ahead of each occurrence the
    portal keeps room for them with placeholder pods, which real servers preempt; an admin may
    cap the placeholders or refuse them."""

    hub = models.ForeignKey(Hub, on_delete=models.CASCADE, related_name="class_sessions")
    title = models.CharField(max_length=100)
    first_day = models.DateField(help_text="The day of the (first) session.")
    start_time = models.TimeField(help_text="Local time in the session's time zone.")
    duration_minutes = models.PositiveIntegerField(
        default=90, validators=[MinValueValidator(15), MaxValueValidator(12 * 60)]
    )
    time_zone = models.CharField(
        max_length=64, default="UTC", validators=[validate_time_zone], help_text="e.g. Europe/Oslo"
    )
    weekly = models.BooleanField(default=False, help_text="Repeats every week on that weekday.")
    last_day = models.DateField(
        null=True, blank=True, help_text="Weekly sessions: the last day (default: the hub's end)."
    )
    attendees = models.PositiveIntegerField(
        validators=[MinValueValidator(1)], help_text="How many users attend, GPU users included."
    )
    gpu_attendees = models.PositiveIntegerField(
        default=0, help_text="How many of them start GPU servers."
    )
    # An admin's decision: at most this many placeholders (empty: as asked), or none at all.
    max_placeholders = models.PositiveIntegerField(
        null=True, blank=True, help_text="An admin's cap on the placeholders (empty: as asked)."
    )
    refused = models.BooleanField(default=False, help_text="An admin refused the reservation.")
    admin_reason = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["hub", "first_day", "start_time"]
        constraints = [
            models.CheckConstraint(
                condition=Q(gpu_attendees__lte=models.F("attendees")),
                name="class_session_gpu_attendees_attend",
                violation_error_message="GPU attendees are among the attendees.",
            ),
            models.CheckConstraint(
                condition=Q(last_day__isnull=True) | Q(last_day__gte=models.F("first_day")),
                name="class_session_days_ordered",
                violation_error_message="The last day is on or after the first.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.title} ({self.hub.slug})"

    @property
    def decision(self) -> str:
        """Where an admin left the room asked for: "as asked", "capped" or "refused"."""
        if self.refused:
            return "refused"
        return "as asked" if self.max_placeholders is None else "capped"

    def clean(self) -> None:
        """Within the hub: its period, its servers, its GPU seats (the room counts against the
        hub's quota, so a session may not ask for more than the quota holds), and only while
        the hub lives. The web form, the API and the Django admin all validate through here."""
        from django.core.exceptions import ValidationError

        if not self.hub_id:
            return
        hub = self.hub
        errors: dict[str, str] = {}
        if hub.state in FINAL_STATES:
            errors["__all__"] = (
                f"The hub is {hub.get_state_display().lower()}; it holds no class sessions."
            )
        first, last = self.first_day, self.last_day
        if first and not (hub.start_date <= first <= hub.end_date):
            errors["first_day"] = (
                f"Pick a day within the hub's period ({hub.start_date} to {hub.end_date})."
            )
        if last and not self.weekly:
            errors["last_day"] = "Only a weekly session has a last day."
        elif last and last > hub.end_date:
            errors["last_day"] = f"The hub ends on {hub.end_date}."
        elif last and first and last < first:
            errors["last_day"] = "The last day is on or after the first."
        attendees = self.attendees or 0
        if attendees > hub.servers:
            errors["attendees"] = (
                f"The hub's quota holds {hub.servers} servers; ask for at most that many."
            )
        gpus = self.gpu_attendees or 0
        if gpus > attendees:
            errors["gpu_attendees"] = "GPU attendees are among the attendees."
        elif gpus and not (hub.gpu_type_id and hub.gpus_per_user):
            errors["gpu_attendees"] = "The hub has no GPUs."
        elif gpus > hub.gpu_servers:
            errors["gpu_attendees"] = (
                f"The hub's GPU seats hold {hub.gpu_servers} GPU servers at once."
            )
        if errors:
            raise ValidationError(errors)
