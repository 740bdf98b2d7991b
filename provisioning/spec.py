"""The provisioning view of a hub: plain data, independent of the portal's models."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    """GPUs per user server, of one type, selected by its node product label."""

    resource_name: str
    product: str
    count: int


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
    images: tuple[str, ...] = ()
    home_size_gib: int = 10
    shared_size_gib: int = 0
    idle_timeout_minutes: int = 60
    jobs_access: bool = False
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return f"hub-{self.slug}"

    @property
    def host(self) -> str:
        return f"{self.slug}.{self.hubs_domain}"


def from_hub(hub, hubs_domain: str) -> HubSpec:
    """Build the provisioning spec of a portal Hub (a `portal.hubs.models.Hub`)."""
    gpu = None
    if hub.gpu_type_id and hub.gpus_per_user:
        gpu = GpuRequest(
            resource_name=hub.gpu_type.resource_name,
            product=hub.gpu_type.node_label_value,
            count=hub.gpus_per_user,
        )
    images = tuple(image.reference for image in hub.images.all())
    if hub.custom_image:
        images += (hub.custom_image,)
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
        images=images,
        home_size_gib=hub.home_size_gib,
        shared_size_gib=hub.shared_volume_gib if hub.shared_volume_mode != "none" else 0,
        idle_timeout_minutes=hub.idle_timeout_minutes,
        jobs_access=hub.jobs_access,
    )
