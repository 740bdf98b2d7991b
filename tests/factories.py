"""factory_boy factories for users, catalogue entries and hubs."""

import datetime
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from portal.hubs.lifecycle import HubState
from portal.hubs.models import GpuType, HardwareOption, Hub, Image, StorageOption


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.django.Password("correct horse battery staple")


class IdentityProfileFactory(factory.django.DjangoModelFactory):
    """The IdP groups of a user as the provider confirmed them just now (at a sign-in or a
    refresh): only groups confirmed within OIDC_RIGHTS_MAX_AGE_SECONDS count."""

    class Meta:
        model = "accounts.IdentityProfile"

    user = factory.SubFactory(UserFactory)
    idp_groups = factory.List([])
    groups_refreshed_at = factory.LazyFunction(timezone.now)


def verified_user(username: str, email: str | None = None):
    """A user whose identity provider verified their e-mail address (`email`, else
    <username>@uni.example) just now, as a sign-in or refresh stores it."""
    email = email or f"{username}@uni.example"
    user = UserFactory(username=username, email=email)
    IdentityProfileFactory(user=user, verified_email=email.lower())
    return user


class AdminFactory(UserFactory):
    is_staff = True
    is_superuser = True


class HardwareOptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = HardwareOption
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"hw{n}")
    display_name = factory.LazyAttribute(lambda o: o.name.title())
    cpu_guarantee = Decimal("0.5")
    cpu_limit = Decimal("1")
    mem_guarantee_gib = Decimal("1")
    mem_limit_gib = Decimal("2")


class GpuTypeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = GpuType
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"gpu{n}")
    display_name = factory.LazyAttribute(lambda o: o.name.upper())
    node_label_value = "NVIDIA-A100-SXM4-80GB"


class ImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Image
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"image{n}")
    display_name = factory.LazyAttribute(lambda o: o.name.title())
    reference = "quay.io/jupyter/base-notebook:python-3.11"


class StorageOptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StorageOption
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"storage{n}")
    display_name = factory.LazyAttribute(lambda o: o.name.title())
    server = "nfs.example.org"
    path = "/export/test"


class HubFactory(factory.django.DjangoModelFactory):
    """A hub in any state, created directly (tests of submit() go through the service)."""

    class Meta:
        model = Hub
        skip_postgeneration_save = True

    display_name = factory.Sequence(lambda n: f"Hub {n}")
    slug = factory.Sequence(lambda n: f"hub{n}")
    kind = Hub.Kind.COURSE
    start_date = factory.LazyFunction(lambda: timezone.localdate() + datetime.timedelta(days=1))
    end_date = factory.LazyAttribute(lambda h: h.start_date + datetime.timedelta(days=30))
    owner = factory.SubFactory(UserFactory)
    state = HubState.PENDING

    @factory.post_generation
    def hardware_options(self, create, extracted, **kwargs):
        if create:
            self.hardware_options.set(extracted or [HardwareOptionFactory(name="small")])

    @factory.post_generation
    def images(self, create, extracted, **kwargs):
        if create:
            self.images.set(extracted or [ImageFactory(name="scipy")])


def course_hub(owner, **fields) -> Hub:
    """The 40 + 2 course: a running hub of 42 users, one H100 per GPU server, two seats."""
    values = dict(
        owner=owner,
        slug="stats-101",
        state=HubState.RUNNING,
        expected_users=42,
        gpu_type=GpuType.objects.get(name="h100"),
        gpus_per_user=1,
        max_gpus=2,
    )
    return HubFactory(**{**values, **fields})


def api_token(user, scope: str | None = None) -> str:
    """A new API token for the user, in clear (admins get the admin scope, others write)."""
    from portal.accounts import tokens

    if scope is None:
        scope = "admin" if user.is_staff else "write"
    return tokens.issue(user, name=f"test-{scope}", scope=scope)[1]
