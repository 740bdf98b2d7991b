"""`HubSpec`, the typed description of one hub that provisioning renders and applies.

Plain frozen dataclasses, independent of the portal's models: the portal builds them with one
adapter (`portal/hubs/hubspec.py`), tests and benchmarks build them by hand.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerOption:
    """One hardware option users of the hub may pick (CPU in cores, memory in GiB)."""

    name: str
    display_name: str
    cpu_guarantee: float
    cpu_limit: float
    mem_guarantee_gib: float
    mem_limit_gib: float


@dataclass(frozen=True)
class GpuRequest:
    """GPUs per user server, of one type, selected by a node label."""

    resource_name: str
    product: str
    count: int
    node_label_key: str = "nvidia.com/gpu.product"
    display_name: str = ""
    # The GPU type's name in the portal's catalogue (capacity is counted per type).
    type_name: str = ""
    # GPU seats: the GPUs all the hub's servers hold at once (0: one set per server).
    max_gpus: int = 0


@dataclass(frozen=True)
class ImageChoice:
    """An image users of the hub may start, with the interface it serves."""

    name: str
    display_name: str
    reference: str
    interface: str = "jupyterlab"
    default_url: str = "/lab"
    # The Pod Security level the image needs: "restricted" (runs as a non-root user with
    # every capability dropped, as the Jupyter stacks do) or "baseline" (an admin's choice).
    pod_security: str = "restricted"


@dataclass(frozen=True)
class ExternalVolume:
    """External storage from the catalogue, mounted into every user server."""

    name: str
    kind: str  # "nfs" or "pvc"
    mount_path: str
    read_only: bool = True
    server: str = ""
    path: str = ""
    storage_class: str = ""
    size_gib: int = 0


@dataclass(frozen=True)
class TierSpec:
    """What members in one tier may use. Empty `server_options` / `images` mean everything the
    hub offers (and then also its custom image)."""

    name: str
    server_options: tuple[str, ...] = ()
    gpu: bool = True
    images: tuple[str, ...] = ()
    shared: str = "ro"  # "ro" or "rw"
    jobs: bool = False
    default: bool = False


@dataclass(frozen=True)
class GroupGrantSpec:
    """Every member of an IdP group may use the hub, with a role and a tier ("" = default)."""

    group: str
    role: str = "member"  # "member" or "co-owner"
    tier: str = ""


# The tier of a hub without any (specs built by hand, hubs from before tiers existed).
DEFAULT_TIER = TierSpec("members", default=True)
# What the owner and co-owners may use: everything, the shared volume writable.
OWNERS_TIER = TierSpec("owners", shared="rw", jobs=True)
# A member's jobs namespace is hub-<slug>-jobs-<key>, their ServiceAccount jobs-<key>.
JOBS_NAMESPACE_INFIX = "-jobs-"
JOBS_ACCOUNT_PREFIX = "jobs-"


def member_key(username: str) -> str:
    """A short, stable, DNS-safe name part for one user (usernames may be e-mail addresses)."""
    return hashlib.sha256(username.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class HubSpec:
    """Everything provisioning needs to render one hub's Kubernetes objects."""

    hub_id: int
    slug: str
    owner: str
    hubs_domain: str
    expected_users: int
    # The usage period: the capacity check and the policy read it, rendering does not.
    start_date: datetime.date | None = None
    end_date: datetime.date | None = None
    notebooks_per_user: int = 1
    server_options: tuple[ServerOption, ...] = ()
    gpu: GpuRequest | None = None
    images: tuple[ImageChoice, ...] = ()
    custom_image: str = ""
    allowed_registries: tuple[str, ...] = ()
    home_size_gib: int = 10
    wipe_home_allowed: bool = False
    shared_size_gib: int = 0
    shared_mode: str = "none"  # "none", "ro" or "rw"
    external_volumes: tuple[ExternalVolume, ...] = ()
    # The owner's idle timeout. Not rendered: the portal applies the server policy through
    # the hub's API (portal/hubs/server_policy.py); kept so a spec says what the hub asked for.
    idle_timeout_minutes: int | None = None
    jobs_access: bool = False
    co_owners: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    # Member tiers (the default one flagged), each member's tier (username, tier name; members
    # not listed get the default tier) and IdP group grants.
    tiers: tuple[TierSpec, ...] = ()
    member_tiers: tuple[tuple[str, str], ...] = ()
    group_grants: tuple[GroupGrantSpec, ...] = ()
    # Suspended hubs keep their objects and volumes but run nothing (hub and proxy at zero).
    suspended: bool = False
    # The OAuth client this hub logs in with at the identity provider ("" when not known here:
    # the client all hubs share, or else <prefix><slug>; see IdentityProvider.for_hub).
    login_client_id: str = ""
    # Egress of user servers and jobs beyond DNS and the public internet, which an admin
    # opens per hub (the installation may open it for all hubs: RenderSettings.egress).
    open_egress: bool = False
    # (subject at the issuer, username) of the people above who sign in with the issuer: the
    # hub names a user by the portal's account of their subject, never by a name claim.
    identities: tuple[tuple[str, str], ...] = ()
    # Classes that start warm: placeholder servers holding room now, without and with the
    # hub's GPUs (sized and placed like its largest server; real servers preempt them).
    warm_servers: int = 0
    warm_gpu_servers: int = 0

    @property
    def gpu_seats(self) -> int:
        """The GPUs the hub's users hold at once: its seats, else one set per server (never
        more than every server of every expected user can hold); 0 without GPUs."""
        if self.gpu is None:
            return 0
        every_server = self.expected_users * self.notebooks_per_user * self.gpu.count
        return min(self.gpu.max_gpus, every_server) if self.gpu.max_gpus else every_server

    @property
    def gpu_servers(self) -> int:
        """How many GPU servers may run at once (seats / GPUs per server)."""
        return self.gpu_seats // self.gpu.count if self.gpu else 0

    @property
    def period_days(self) -> int:
        """Length of the usage period in days, both ends included (0 when not known)."""
        if self.start_date is None or self.end_date is None:
            return 0
        return (self.end_date - self.start_date).days + 1

    @property
    def namespace(self) -> str:
        """The hub's namespace: the hub and its proxy, their Secret, ServiceAccount and the
        hub's database claim. Nothing a user runs is ever here."""
        return f"hub-{self.slug}"

    @property
    def users_namespace(self) -> str:
        """The namespace of what the hub's users run: their servers and jobs, homes, the
        shared volume and external storage."""
        return f"hub-{self.slug}-users"

    def tier_of(self, username: str) -> TierSpec | None:
        """The tier of a user named in the spec (owners and co-owners: everything), or None
        for a user it does not name (who may still come in through an IdP group)."""
        if username in (self.owner, *self.co_owners):
            return OWNERS_TIER
        if username not in self.members:
            return None
        tiers = {tier.name: tier for tier in self.tiers or (DEFAULT_TIER,)}
        default = next((t for t in tiers.values() if t.default), next(iter(tiers.values())))
        return tiers.get(dict(self.member_tiers).get(username, default.name), default)

    @property
    def jobs_users(self) -> tuple[str, ...]:
        """The users who run Jobs, each in a namespace of their own: with jobs access, the
        owner, the co-owners and the members whose tier has the jobs role. Users who come in
        through an IdP group are not known here and get no jobs namespace."""
        if not self.jobs_access:
            return ()
        users = dict.fromkeys([self.owner, *self.co_owners, *self.members])
        return tuple(user for user in users if (tier := self.tier_of(user)) and tier.jobs)

    def jobs_namespace(self, username: str) -> str:
        """The namespace where one user's Jobs run: theirs alone, so nobody else in the hub
        sees, changes or deletes them (at most 58 characters: slugs have at most 40)."""
        return f"hub-{self.slug}{JOBS_NAMESPACE_INFIX}{member_key(username)}"

    @staticmethod
    def jobs_account(username: str) -> str:
        """The ServiceAccount (in the users' namespace) a user's server runs as: it may
        manage Jobs in that user's jobs namespace and nothing else."""
        return f"{JOBS_ACCOUNT_PREFIX}{member_key(username)}"

    @property
    def jobs_namespaces(self) -> tuple[str, ...]:
        return tuple(self.jobs_namespace(user) for user in self.jobs_users)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the hub: its own, its users', and one per user with Jobs."""
        return (self.namespace, self.users_namespace, *self.jobs_namespaces)

    @property
    def pod_security(self) -> str:
        """The Pod Security level enforced for user servers: "restricted" unless one of the
        hub's images needs "baseline", or it mounts NFS exports from the catalogue (inline NFS
        volumes are not among the volume types "restricted" allows)."""
        if any(image.pod_security == "baseline" for image in self.images) or any(
            volume.kind == "nfs" for volume in self.external_volumes
        ):
            return "baseline"
        return "restricted"

    @property
    def host(self) -> str:
        return f"{self.slug}.{self.hubs_domain}"

    @property
    def login_callback_url(self) -> str:
        """Where the identity provider sends users back to after they sign in to the hub."""
        return f"https://{self.host}/hub/oauth_callback"
