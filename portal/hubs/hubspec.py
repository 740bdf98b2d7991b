"""The one adapter from the portal's records to provisioning's typed `HubSpec`.

`from_hub` reads a hub as the database holds it; `from_revision` reads a revision's JSON spec
(what the hub would be after a change), resolving catalogue entries and people by name without
writing anything. Rendering, previews and diffs, the self-service policy and the GPU capacity
checks all take the `HubSpec` these return, so there is no second stand-in for "a hub that is
not saved yet".
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Prefetch, Q, QuerySet
from social_django.models import UserSocialAuth

from portal.accounts import oidc
from portal.accounts.auth import subject_of
from portal.hubs.classes import placeholders_at
from portal.hubs.members import default_tier_fields
from portal.hubs.models import (
    GpuType,
    HardwareOption,
    Hub,
    Image,
    LoginClient,
    Member,
    SelfServicePolicy,
    StorageOption,
)
from provisioning.spec import (
    ExternalVolume,
    GpuRequest,
    GroupGrantSpec,
    HubSpec,
    ImageChoice,
    ServerOption,
    TierSpec,
)


def hub_queryset(*, identities: bool = True) -> QuerySet[Hub]:
    """Hubs with everything `from_hub` reads, in a fixed number of queries.

    `identities=False` leaves out the people's sign-in identities, which only the hub's
    members file uses: for specs read to weigh quotas (the self-service policy), with
    `from_hub(..., identities=False)`."""
    hubs = Hub.objects.select_related("owner", "gpu_type", "login_client").prefetch_related(
        "hardware_options",
        "images",
        "storage_options",
        Prefetch("members", queryset=Member.objects.select_related("user")),
        "tiers__hardware_options",
        "tiers__images",
        "group_grants",
        "class_sessions",
    )
    if identities:
        hubs = hubs.prefetch_related("owner__social_auth", "members__user__social_auth")
    return hubs


def from_hub(
    hub: Hub,
    hubs_domain: str | None = None,
    registries: tuple[str, ...] | None = None,
    *,
    identities: bool = True,
    now: datetime.datetime | None = None,
) -> HubSpec:
    """The spec of a hub as its row, catalogue links and people say now.

    `registries` are the custom-image registries the policy allows (read from the policy when
    not given); load hubs with `hub_queryset()` to build many specs without a query per hub.
    `identities=False` gives a spec without the people's identities (no members file can be
    rendered from it that lets anyone in), for weighing its quotas and policy.
    `now` is the moment its classes' placeholders are counted at (default: now).
    """
    people = list(hub.members.all())
    tier_names = {tier.pk: tier.name for tier in hub.tiers.all()}
    return _spec(
        hub,
        {name: getattr(hub, name) for name in _SCALARS},
        gpu_type=hub.gpu_type if hub.gpu_type_id else None,
        hardware=hub.hardware_options.all(),
        images=hub.images.all(),
        storage=hub.storage_options.all(),
        co_owners=[c.user.get_username() for c in people if c.role == Member.Role.CO_OWNER],
        members=[c.user.get_username() for c in people if c.role == Member.Role.MEMBER],
        tier_of={c.user.get_username(): tier_names.get(c.tier_id) for c in people},
        hubs_domain=hubs_domain,
        registries=registries,
        identities=(
            people_identities([hub.owner, *(c.user for c in people), *group_people(hub)])
            if identities
            else ()
        ),
        now=now,
    )


def people_identities(users) -> tuple[tuple[str, str], ...]:
    """(subject, username) of the users' identities at the configured issuer."""
    found = set()
    for user in users:
        for social in user.social_auth.all():
            subject = subject_of(social.uid, oidc.issuer()) if social.provider == "oidc" else None
            if subject is not None:
                found.add((subject, user.get_username()))
    return tuple(sorted(found))


def group_people(hub: Hub) -> list:
    """Portal users of the issuer whose stored IdP groups include a group the hub grants, so
    that the hub can name them by subject. Naming is all it gives: the hub admits them only
    when its own login finds the group in the provider's claims. One query, none for a hub
    without group grants; someone who never signed in to the portal is not known here."""
    groups = {grant.group for grant in hub.group_grants.all()} if hub.pk else set()
    if not groups:
        return []
    users = (
        get_user_model()
        .objects.filter(
            pk__in=UserSocialAuth.objects.filter(provider="oidc").values("user_id"),
            identity__isnull=False,
        )
        .select_related("identity")
        .prefetch_related("social_auth")
    )
    if connection.features.supports_json_field_contains:
        in_any = Q()
        for group in sorted(groups):
            in_any |= Q(identity__idp_groups__contains=[group])
        return list(users.filter(in_any))
    # SQLite (the quick start) cannot look into JSON lists: filter here.
    return [user for user in users if groups & set(user.identity.idp_groups or [])]


def from_revision(
    hub: Hub,
    spec: Mapping[str, Any],
    hubs_domain: str | None = None,
    registries: tuple[str, ...] | None = None,
) -> HubSpec:
    """The spec `hub` would have with a revision's JSON spec (see portal.hubs.revisions).

    Catalogue entries and people are looked up by name (names that no longer exist are left
    out); members keep the tiers they have now, since tiers are not part of a revision."""
    scalars = {name: spec.get(name) for name in _SCALARS}
    for name in ("start_date", "end_date"):
        if isinstance(scalars[name], str):
            scalars[name] = datetime.date.fromisoformat(scalars[name])
    gpu = spec.get("gpu_type")
    users = set(spec.get("co_owners") or []) | set(spec.get("members") or [])
    tier_of = dict(
        Member.objects.filter(hub_id=hub.pk, user__username__in=users).values_list(
            "user__username", "tier__name"
        )
    )
    existing = set(
        get_user_model().objects.filter(username__in=users).values_list("username", flat=True)
    )
    return _spec(
        hub,
        scalars,
        gpu_type=GpuType.objects.filter(name=gpu).first() if gpu else None,
        hardware=_named(HardwareOption, spec.get("hardware_options")),
        images=_named(Image, spec.get("images")),
        storage=_named(StorageOption, spec.get("storage_options")),
        co_owners=[name for name in spec.get("co_owners") or [] if name in existing],
        members=[name for name in spec.get("members") or [] if name in existing],
        tier_of=tier_of,
        hubs_domain=hubs_domain,
        registries=registries,
        identities=people_identities(
            [
                *get_user_model()
                .objects.filter(Q(pk=hub.owner_id) | Q(username__in=users))
                .prefetch_related("social_auth"),
                *group_people(hub),
            ]
        ),
    )


# Hub fields a spec copies as they are.
_SCALARS = (
    "slug",
    "start_date",
    "end_date",
    "expected_users",
    "notebooks_per_user",
    "gpus_per_user",
    "max_gpus",
    "custom_image",
    "home_size_gib",
    "wipe_home_allowed",
    "shared_volume_gib",
    "shared_volume_mode",
    "idle_timeout_minutes",
    "max_server_age_hours",
    "jobs_access",
)


def _named(model, names: Iterable[str] | None) -> list:
    return list(model.objects.filter(name__in=list(names or [])).order_by("pk"))


def _spec(
    hub: Hub,
    values: Mapping[str, Any],
    *,
    gpu_type: GpuType | None,
    hardware: Iterable[HardwareOption],
    images: Iterable[Image],
    storage: Iterable[StorageOption],
    co_owners: list[str],
    members: list[str],
    tier_of: Mapping[str, str | None],
    hubs_domain: str | None,
    registries: tuple[str, ...] | None,
    identities: tuple[tuple[str, str], ...] = (),
    now: datetime.datetime | None = None,
) -> HubSpec:
    gpu = None
    if gpu_type is not None and values["gpus_per_user"]:
        gpu = GpuRequest(
            resource_name=gpu_type.resource_name,
            product=gpu_type.node_label_value,
            count=values["gpus_per_user"],
            node_label_key=gpu_type.node_label_key,
            display_name=gpu_type.display_name,
            type_name=gpu_type.name,
            max_gpus=values.get("max_gpus") or 0,
        )
    shared_mode = values["shared_volume_mode"] if values["shared_volume_gib"] else "none"
    warm_servers, warm_gpu_servers = placeholders_at(hub, now)
    return HubSpec(
        identities=identities,
        hub_id=hub.pk,
        slug=values["slug"] or hub.slug,
        owner=hub.owner.get_username(),
        hubs_domain=hubs_domain or settings.HUBS_DOMAIN,
        start_date=values["start_date"],
        end_date=values["end_date"],
        expected_users=values["expected_users"],
        notebooks_per_user=values["notebooks_per_user"],
        server_options=tuple(
            ServerOption(
                name=option.name,
                display_name=option.display_name,
                cpu_guarantee=float(option.cpu_guarantee),
                cpu_limit=float(option.cpu_limit),
                mem_guarantee_gib=float(option.mem_guarantee_gib),
                mem_limit_gib=float(option.mem_limit_gib),
            )
            for option in hardware
        ),
        gpu=gpu,
        images=tuple(
            ImageChoice(
                name=image.name,
                display_name=image.display_name,
                reference=image.reference,
                interface=image.interface,
                default_url=image.default_url,
                pod_security=image.pod_security,
            )
            for image in images
        ),
        custom_image=values["custom_image"] or "",
        allowed_registries=(
            registries if registries is not None else tuple(SelfServicePolicy.current().registries)
        ),
        home_size_gib=values["home_size_gib"],
        wipe_home_allowed=bool(values["wipe_home_allowed"]),
        shared_size_gib=values["shared_volume_gib"] if shared_mode != "none" else 0,
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
            for option in storage
        ),
        idle_timeout_minutes=values["idle_timeout_minutes"],
        jobs_access=bool(values["jobs_access"]),
        co_owners=tuple(co_owners),
        members=tuple(members),
        **_membership(hub, values, members, tier_of),
        suspended=hub.state == "suspended",
        login_client_id=_login_client_id(hub),
        open_egress=hub.open_egress,
        warm_servers=warm_servers,
        warm_gpu_servers=warm_gpu_servers if gpu is not None else 0,
    )


def _login_client_id(hub: Hub) -> str:
    """The client id the portal registered for the hub at the identity provider, if any."""
    try:
        return hub.login_client.client_id
    except (LoginClient.DoesNotExist, ValueError):  # ValueError: a hub not saved yet
        return ""


def _membership(
    hub: Hub, values: Mapping[str, Any], members: list[str], tier_of: Mapping[str, str | None]
) -> dict:
    """Tiers, members' tiers and group grants, as HubSpec fields."""
    tiers = list(hub.tiers.all()) if hub.pk else []
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
        fields = default_tier_fields(values["shared_volume_mode"])
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
    grants = sorted(hub.group_grants.all(), key=lambda g: g.group) if hub.pk else []
    return {
        "tiers": tuple(specs),
        "member_tiers": tuple(
            sorted((name, tier_of[name]) for name in members if tier_of.get(name))
        ),
        "group_grants": tuple(
            GroupGrantSpec(group=g.group, role=g.role, tier=names.get(g.tier_id, ""))
            for g in grants
        ),
    }
