"""The self-service policy and GPU capacity, as the decisions on requests and changes use them.

Everything here reads a `HubSpec` (portal/hubs/hubspec.py): a saved hub's, or the one a change
would give it. It says what exceeds the policy (field by field), whether a hub's or a change's
GPUs fit over its dates (portal/usage/capacity.py counts them), and it holds the lock that
makes decisions on the last GPUs of a type serialise.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Q

from portal.hubs import hubspec
from portal.hubs.hubspec import hub_queryset
from portal.hubs.lifecycle import LIVE_STATES, HubState
from portal.hubs.models import GpuType, Hub, SelfServicePolicy
from portal.usage import capacity
from portal.usage.capacity import OverCapacity
from provisioning.render import quota_amounts
from provisioning.spec import HubSpec


@dataclass(frozen=True)
class Violation:
    """One way a request exceeds the self-service policy, and the spec field concerned."""

    field: str
    message: str


def _num(value: Decimal | int | float) -> str:
    return f"{Decimal(str(value)).normalize():f}"


def policy_checks(
    spec: HubSpec, policy: SelfServicePolicy | None = None, others: list[HubSpec] | None = None
) -> list[Violation]:
    """Return how a hub's spec exceeds the self-service policy, field by field, and how the
    owner's live hubs with it exceed the per-owner limits (`others`: see _owner_excess)."""
    policy = policy or SelfServicePolicy.current()
    return _spec_checks(spec, policy) + owner_checks(spec, policy, others)


def _spec_checks(spec: HubSpec, policy: SelfServicePolicy) -> list[Violation]:
    """How the spec alone exceeds the self-service policy."""
    found: list[Violation] = []

    def check(field: str, value, limit, template: str, unit: str = "") -> None:
        # template names the value: "{} GPUs per user" -> "4 GPUs per user exceeds ... of 0".
        if Decimal(str(value)) > Decimal(str(limit)):
            message = template.format(_num(value))
            message = f"{message[0].upper()}{message[1:]} exceeds the self-service limit of "
            found.append(Violation(field, f"{message}{_num(limit)}{unit}"))

    check("expected_users", spec.expected_users, policy.max_expected_users, "{} expected users")
    for option in spec.server_options:
        name, cpu, mem = option.display_name, policy.max_cpu_limit, policy.max_mem_limit_gib
        check("hardware_options", option.cpu_limit, cpu, f"{name}: CPU limit {{}}", " CPU")
        check("hardware_options", option.mem_limit_gib, mem, f"{name}: memory {{}} GiB", " GiB")
    if spec.gpu is not None:
        check("gpus_per_user", spec.gpu.count, policy.max_gpus_per_user, "{} GPUs per user")
        check("max_gpus", spec.gpu_seats, policy.max_gpus_per_hub, "{} GPU seats")
    check("end_date", spec.period_days, policy.max_period_days, "a period of {} days", " days")
    check("home_size_gib", spec.home_size_gib, policy.max_home_gib, "{} GiB home", " GiB")
    shared = spec.shared_size_gib
    check("shared_volume_gib", shared, policy.max_shared_gib, "{} GiB shared volume", " GiB")
    if spec.jobs_access and policy.jobs_access_needs_approval:
        found.append(
            Violation(
                "jobs_access", "Kubernetes API access for batch jobs needs an admin's approval"
            )
        )
    if spec.custom_image and policy.custom_images_need_approval:
        found.append(
            Violation("custom_image", f"Custom image {spec.custom_image} needs an admin's approval")
        )
    return found


GIB = Decimal(2**30)


def _gpus(quota: dict[str, Decimal]) -> Decimal:
    return sum(
        (amount for key, amount in quota.items() if key.startswith("requests.") and "gpu" in key),
        Decimal(0),
    )


# What a hub's quota holds, per limit: the quota key's amount in the policy's unit.
OWNER_TOTALS = (
    ("max_owner_cpu", "CPU cores", lambda quota: quota["limits.cpu"]),
    ("max_owner_mem_gib", "GiB of memory", lambda quota: quota["limits.memory"] / GIB),
    ("max_owner_gpus", "GPUs", _gpus),
    ("max_owner_storage_gib", "GiB of volumes", lambda quota: quota["requests.storage"] / GIB),
)


def owner_checks(
    spec: HubSpec, policy: SelfServicePolicy, others: list[HubSpec] | None = None
) -> list[Violation]:
    """How the owner's live hubs together, with this one as `spec` says, exceed the policy's
    per-owner limits (requests still waiting for an admin do not count; an owner's only hub is
    judged by the limits per hub alone)."""
    return [violation for _, _, violation in _owner_excess(spec, policy, others)]


# The states in which an owner's hub counts towards the per-owner limits.
OWNER_COUNTED_STATES = LIVE_STATES - {HubState.PENDING}


def _owner_excess(
    spec: HubSpec, policy: SelfServicePolicy, others: list[HubSpec] | None = None
) -> list[tuple[str, Decimal, Violation]]:
    """(limit, the owner's total, violation) for each per-owner limit the total exceeds.

    `others`: the specs of the owner's other counted hubs, when the caller has read them."""
    if others is None:
        hubs = (
            hub_queryset(identities=False)
            .filter(owner__username=spec.owner, state__in=OWNER_COUNTED_STATES)
            .exclude(pk=spec.hub_id)
        )
        others = [hubspec.from_hub(hub, registries=(), identities=False) for hub in hubs]
    specs = [spec, *others]
    found: list[tuple[str, Decimal, Violation]] = []
    if len(specs) == 1:
        return found  # one hub alone is judged by the limits per hub
    if len(specs) > policy.max_live_hubs_per_owner:
        found.append(
            (
                "max_live_hubs_per_owner",
                Decimal(len(specs)),
                Violation(
                    "__all__",
                    f"{len(specs)} live hubs of one owner exceed the self-service limit of "
                    f"{policy.max_live_hubs_per_owner}",
                ),
            )
        )
    quotas = [quota_amounts(one, settings.HUB_QUOTA_CAPS) for one in specs]
    for limit_name, unit, amount in OWNER_TOTALS:
        total = sum((amount(quota) for quota in quotas), Decimal(0))
        limit = getattr(policy, limit_name)
        if total > limit:
            message = (
                f"The owner's live hubs would hold {_num(round(total, 1))} {unit}, which "
                f"exceeds the self-service limit of {limit} per owner"
            )
            found.append((limit_name, total, Violation("__all__", message)))
    return found


def policy_violations(spec: HubSpec, policy: SelfServicePolicy | None = None) -> list[str]:
    """Return human-readable reasons why a spec needs an admin; empty means auto-approve."""
    return [violation.message for violation in policy_checks(spec, policy)]


def saved_policy_violations(hub_ids: Collection[int]) -> dict[int, list[str]]:
    """`policy_violations` of each hub's saved spec, by hub id, in a fixed number of queries
    however many hubs: the policy, the hubs and their owners' counted hubs are read once."""
    if not hub_ids:
        return {}
    policy = SelfServicePolicy.current()
    registries = tuple(policy.registries)
    owners = Hub.objects.filter(pk__in=hub_ids).values("owner_id")
    hubs = hub_queryset(identities=False).filter(
        Q(pk__in=hub_ids) | Q(owner_id__in=owners, state__in=OWNER_COUNTED_STATES)
    )
    asked, counted = [], defaultdict(list)
    for hub in hubs:
        spec = hubspec.from_hub(hub, registries=registries, identities=False)
        if hub.pk in hub_ids:
            asked.append(spec)
        if hub.state in OWNER_COUNTED_STATES:
            counted[spec.owner].append(spec)
    found = {}
    for spec in asked:
        others = [other for other in counted[spec.owner] if other.hub_id != spec.hub_id]
        found[spec.hub_id] = [v.message for v in policy_checks(spec, policy, others)]
    return found


def change_policy_checks(old: HubSpec, new: HubSpec) -> list[Violation]:
    """How a new spec exceeds the policy in ways the current spec does not.

    An admin already approved what the hub has: keeping, say, 80 users that were approved
    once does not send an unrelated change (a longer idle timeout) back to the queue, while
    raising them to 90 does.
    """
    policy = SelfServicePolicy.current()
    before = {v.message for v in _spec_checks(old, policy)}
    found = [v for v in _spec_checks(new, policy) if v.message not in before]
    # Totals over the owner's hubs: a change is new excess only when it adds to a total.
    had = {limit: total for limit, total, _ in _owner_excess(old, policy)}
    for limit, total, violation in _owner_excess(new, policy):
        if limit not in had or total > had[limit]:
            found.append(violation)
    return found


# --- GPU capacity -------------------------------------------------------------------------------


def lock_owner(owner_id: int) -> None:
    """Lock the owner's row for the rest of the transaction: self-service decisions that add
    to an owner's totals (a request, a change) serialise on it, so two at once cannot both
    pass the per-owner limits."""
    get_user_model().objects.select_for_update().filter(pk=owner_id).first()


def lock_gpu_type(gpu_type_id: int) -> None:
    """Lock a GPU type's row for the rest of the transaction: every decision that can take GPUs
    of that type (a request, an approval, a change) serialises on it and sees the others."""
    GpuType.objects.select_for_update().filter(pk=gpu_type_id).first()


def over_capacity(spec: HubSpec, lock: bool = True) -> OverCapacity | None:
    """Why the spec's GPUs do not fit over its dates (others' reservations counted, the hub's
    own not), or None. With `lock` (call it inside a transaction) the GPU type's row is locked
    first, so two decisions on the last GPUs serialise and the second sees the first."""
    gpu_type = capacity.gpu_type_of(spec)
    if gpu_type is None or not capacity.reserved_gpus(spec):
        return None
    if lock:
        lock_gpu_type(gpu_type.pk)
    try:
        capacity.check_hub_fits(spec)
    except OverCapacity as error:
        return error
    return None


def counted(gpu_type: GpuType) -> bool:
    """Whether a collection pass has counted the cluster's GPUs of this type."""
    return capacity.allocatable(gpu_type) is not None


def uncounted(gpu_type: GpuType) -> str:
    """Why a decision on GPUs nobody has counted yet waits for an admin."""
    # Until the usage collector's first pass nobody knows whether GPUs fit: an admin decides.
    return (
        f"the cluster's {gpu_type.display_name} GPUs have not been counted yet, so whether "
        "they fit is not known"
    )


def capacity_violations(spec: HubSpec) -> list[str]:
    """What keeps a new request's GPUs from the self-service policy: they do not fit, or the
    cluster's GPUs of the type were never counted. Locks the GPU type's row."""
    over = over_capacity(spec)
    if over is not None:
        return [
            f"its GPUs do not fit ({over.wanted} wanted, "
            f"{max(over.free.free or 0, 0)} free over its dates)"
        ]
    gpu_type = capacity.gpu_type_of(spec)
    if gpu_type is not None and spec.gpu is not None and not counted(gpu_type):
        return [uncounted(gpu_type)]
    return []


# A change of these can make a hub hold more GPUs, or hold them on other days.
CAPACITY_FIELDS = frozenset(
    {"gpu_type", "gpus_per_user", "expected_users", "notebooks_per_user", "start_date", "end_date"}
)


def change_takes_gpus(old: HubSpec, new: HubSpec, changed: Iterable[str]) -> bool:
    """Whether a change takes more GPUs, or takes them on other days (or of another type)."""
    changed = set(changed)
    if not CAPACITY_FIELDS & changed:
        return False
    wanted = capacity.reserved_gpus(new)
    moved = {"gpu_type", "start_date", "end_date"} & changed
    return bool(wanted) and (bool(moved) or wanted > capacity.reserved_gpus(old))


def change_over_capacity(
    old: HubSpec, new: HubSpec, changed: Iterable[str], lock: bool = False
) -> OverCapacity | None:
    """Why a change's GPUs do not fit over its dates, or None. The hub's own reservation does
    not count against it, and a change that holds fewer GPUs on the same days always fits.
    With `lock`, the new GPU type's row is locked before the check (see lock_gpu_type)."""
    if not change_takes_gpus(old, new, changed):
        return None
    return over_capacity(new, lock=lock)


def change_capacity_violations(old: HubSpec, new: HubSpec, changed: list[str], lock: bool):
    """The capacity Violations of a change: its GPUs do not fit, or were never counted."""
    if not change_takes_gpus(old, new, changed):
        return []
    over = over_capacity(new, lock=lock)
    if over is not None:
        free = max(over.free.free or 0, 0)
        return [
            Violation(
                "gpus_per_user",
                f"its GPUs do not fit ({over.wanted} wanted, {free} free over its dates)",
            )
        ]
    gpu_type = capacity.gpu_type_of(new)
    if gpu_type is not None and not counted(gpu_type):
        return [Violation("gpu_type", uncounted(gpu_type))]
    return []


def override_reason(error: OverCapacity | None, override: bool, reason: str) -> str:
    """The decision's reason when GPUs do not fit: raise unless an admin overrides."""
    if error is None:
        return reason
    if not override:
        raise error
    free = max(error.free.free or 0, 0)
    return f"Approved over capacity ({error.wanted} GPUs, {free} free): {reason}"
