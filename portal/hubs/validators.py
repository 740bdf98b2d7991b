"""Field validators for hub specs: slugs that make good namespaces and image references."""

import re

from django.core.exceptions import ValidationError

# hub-<slug> must be a DNS-1123 label (at most 63 characters); 40 keeps room for suffixes.
SLUG_MAX_LENGTH = 40
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

RESERVED_SLUGS = frozenset(
    {
        "admin",
        "api",
        "auth",
        "default",
        "hub",
        "hubs",
        "kube-node-lease",
        "kube-public",
        "kube-system",
        "login",
        "mail",
        "portal",
        "static",
        "www",
    }
)


# Names of another hub's namespaces (hub-<slug>-users, hub-<slug>-jobs-<key>).
_OTHER_HUBS_NAMESPACE = re.compile(r"(-users|-jobs-[0-9a-f]{10})$")


def validate_slug(value: str) -> None:
    """Reject slugs that are not DNS-1123 labels or that are reserved."""
    if not _DNS_LABEL.match(value):
        raise ValidationError(
            "Use lowercase letters, digits and hyphens; start and end with a letter or digit.",
            code="invalid_slug",
        )
    if value in RESERVED_SLUGS or value.startswith("kube-") or _OTHER_HUBS_NAMESPACE.search(value):
        raise ValidationError(
            "%(value)s is reserved.", code="reserved_slug", params={"value": value}
        )


_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REFERENCE = re.compile(
    r"^(?:(?P<registry>(?:[a-zA-Z0-9-]+\.)*[a-zA-Z0-9-]+(?::[0-9]+)?)/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def image_registry(reference: str) -> str:
    """Return the registry host of an image reference ("docker.io" when none is named)."""
    first, sep, _rest = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "docker.io"


def validate_image_reference(value: str) -> None:
    """Reject strings that are not container image references (registry/path:tag@digest)."""
    if len(value) > 255 or not _IMAGE_REFERENCE.match(value):
        raise ValidationError(
            "Enter an image reference such as quay.io/jupyter/scipy-notebook:2025-01-06.",
            code="invalid_image",
        )
