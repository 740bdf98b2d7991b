"""The provisioning view of a hub: plain data, independent of the portal's models."""

from __future__ import annotations

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


@dataclass(frozen=True)
class ImageChoice:
    """An image users of the hub may start, with the interface it serves."""

    name: str
    display_name: str
    reference: str
    interface: str = "jupyterlab"
    default_url: str = "/lab"


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


@dataclass(frozen=True)
class HubSpec:
    """Everything provisioning needs to render one hub's Kubernetes objects."""

    hub_id: int
    slug: str
    owner: str
    hubs_domain: str
    expected_users: int
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
    idle_timeout_minutes: int = 60
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
    # the client all hubs share, or else <prefix><slug>; see OidcSettings.for_hub).
    login_client_id: str = ""

    @property
    def namespace(self) -> str:
        return f"hub-{self.slug}"

    @property
    def host(self) -> str:
        return f"{self.slug}.{self.hubs_domain}"

    @property
    def login_callback_url(self) -> str:
        """Where the identity provider sends users back to after they sign in to the hub."""
        return f"https://{self.host}/hub/oauth_callback"


def from_hub(hub, hubs_domain: str, registries: tuple[str, ...] | None = None) -> HubSpec:
    """Build the provisioning spec of a portal Hub (a `portal.hubs.models.Hub`).

    `registries` are the custom-image registries the policy allows (read from the policy when
    not given); prefetch the hub's catalogue entries and collaborators (with their users) to
    build many specs without a query per hub (`HUB_PREFETCH`).
    """
    from portal.hubs.models import Collaborator, SelfServicePolicy

    gpu = None
    if hub.gpu_type_id and hub.gpus_per_user:
        gpu = GpuRequest(
            resource_name=hub.gpu_type.resource_name,
            product=hub.gpu_type.node_label_value,
            count=hub.gpus_per_user,
            node_label_key=hub.gpu_type.node_label_key,
            display_name=hub.gpu_type.display_name,
        )
    collaborators = list(hub.collaborators.all())
    shared_mode = hub.shared_volume_mode if hub.shared_volume_gib else "none"
    return HubSpec(
        hub_id=hub.pk,
        slug=hub.slug,
        owner=hub.owner.get_username(),
        hubs_domain=hubs_domain,
        expected_users=hub.expected_users,
        notebooks_per_user=hub.notebooks_per_user,
        server_options=tuple(
            ServerOption(
                name=option.name,
                display_name=option.display_name,
                cpu_guarantee=float(option.cpu_guarantee),
                cpu_limit=float(option.cpu_limit),
                mem_guarantee_gib=float(option.mem_guarantee_gib),
                mem_limit_gib=float(option.mem_limit_gib),
            )
            for option in hub.hardware_options.all()
        ),
        gpu=gpu,
        images=tuple(
            ImageChoice(
                name=image.name,
                display_name=image.display_name,
                reference=image.reference,
                interface=image.interface,
                default_url=image.default_url,
            )
            for image in hub.images.all()
        ),
        custom_image=hub.custom_image,
        allowed_registries=(
            registries if registries is not None else tuple(SelfServicePolicy.current().registries)
        ),
        home_size_gib=hub.home_size_gib,
        wipe_home_allowed=hub.wipe_home_allowed,
        shared_size_gib=hub.shared_volume_gib if shared_mode != "none" else 0,
        shared_mode=shared_mode,
        external_volumes=tuple(
            ExternalVolume(
                name=option.name,
                kind=option.kind,
                mount_path=option.mount_path,
                read_only=option.read_only,
                server=option.server,
                path=option.path,
                storage_class=option.storage_class,
            )
            for option in hub.storage_options.all()
        ),
        idle_timeout_minutes=hub.idle_timeout_minutes,
        jobs_access=hub.jobs_access,
        co_owners=tuple(
            c.user.get_username() for c in collaborators if c.role == Collaborator.Role.CO_OWNER
        ),
        members=tuple(
            c.user.get_username() for c in collaborators if c.role == Collaborator.Role.MEMBER
        ),
        **_membership(hub, collaborators),
        suspended=hub.state == "suspended",
        login_client_id=_login_client_id(hub),
    )


def _login_client_id(hub) -> str:
    """The client id the portal registered for the hub at the identity provider, if any."""
    from portal.hubs.models import LoginClient

    try:
        return hub.login_client.client_id
    except (LoginClient.DoesNotExist, ValueError):  # ValueError: a hub not saved yet
        return ""


def _membership(hub, collaborators) -> dict:
    """Tiers, members' tiers and group grants of a portal Hub, as HubSpec fields."""
    from portal.hubs.members import default_tier_fields
    from portal.hubs.models import Collaborator

    tiers = list(hub.tiers.all())
    specs = [
        TierSpec(
            name=tier.name,
            server_options=tuple(sorted(o.name for o in tier.hardware_options.all())),
            gpu=tier.gpu_access,
            images=tuple(sorted(i.name for i in tier.images.all())),
            shared=tier.shared_access,
            jobs=tier.jobs_access,
            default=tier.is_default,
        )
        for tier in tiers
    ]
    if not any(tier.default for tier in specs):
        # Not created yet (the portal creates it on submit): render what it will be.
        fields = default_tier_fields(hub)
        specs.insert(
            0,
            TierSpec(
                name=fields["name"],
                gpu=fields["gpu_access"],
                shared=fields["shared_access"],
                jobs=fields["jobs_access"],
                default=True,
            ),
        )
    names = {tier.pk: tier.name for tier in tiers}
    member_names = [
        c.user.get_username() for c in collaborators if c.role == Collaborator.Role.MEMBER
    ]
    if all(hasattr(c, "tier_id") for c in collaborators):
        tier_of = {c.user.get_username(): names.get(c.tier_id) for c in collaborators}
    else:
        # A proposed spec (revisions.ProposedHub) names people only: members keep the tiers
        # they have now.
        tier_of = dict(
            Collaborator.objects.filter(hub_id=hub.pk).values_list("user__username", "tier__name")
        )
    return {
        "tiers": tuple(specs),
        "member_tiers": tuple(
            sorted((name, tier_of[name]) for name in member_names if tier_of.get(name))
        ),
        "group_grants": tuple(
            GroupGrantSpec(group=g.group, role=g.role, tier=names.get(g.tier_id, ""))
            for g in sorted(hub.group_grants.all(), key=lambda g: g.group)
        ),
    }


def hub_queryset():
    """Hubs with everything `from_hub` reads, in a fixed number of queries."""
    from django.db.models import Prefetch

    from portal.hubs.models import Collaborator, Hub

    return Hub.objects.select_related("owner", "gpu_type", "login_client").prefetch_related(
        "hardware_options",
        "images",
        "storage_options",
        Prefetch("collaborators", queryset=Collaborator.objects.select_related("user")),
        "tiers__hardware_options",
        "tiers__images",
        "group_grants",
    )
