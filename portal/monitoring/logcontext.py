"""What every log line of a request carries: its request id, the user once known, the hub
when the address names one. Bound in structlog's context variables (portal/logconfig.py
merges them into every line, the standard library's too)."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

import structlog

from portal.audit.log import from_trusted_proxy

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest
    from django.urls import ResolverMatch

REQUEST_ID_HEADER = "X-Request-ID"
# What a request id from a proxy may look like (a UUID, a trace id, ...); anything else is
# replaced, so that a client cannot write arbitrary text into the logs.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# A route whose `pk` is a hub's (hubs/<int:pk>/... in the web UI, hubs/(?P<pk>...) in the API).
HUB_ROUTE = re.compile(r"(?:^|/)\^?hubs/(?:<int:pk>|\(\?P<pk>)")


def request_id_for(request: HttpRequest) -> str:
    """The X-Request-ID a trusted proxy (TRUSTED_PROXIES) sent, when it is valid; else new."""
    given = request.META.get("HTTP_X_REQUEST_ID", "")
    if given and VALID_REQUEST_ID.fullmatch(given) and from_trusted_proxy(request):
        return given
    return uuid.uuid4().hex


def hub_id_from(match: ResolverMatch | None) -> int | None:
    """The hub a resolved address concerns, if any."""
    if match is None:
        return None
    value = match.kwargs.get("hub_pk")
    if value is None and HUB_ROUTE.search(match.route or ""):
        value = match.kwargs.get("pk")
    return int(value) if value is not None and str(value).isdigit() else None


def bind_user(user: AbstractBaseUser | None) -> None:
    """The rest of the request's lines name this user (signed in, or authenticated by a token)."""
    if user is not None and user.is_authenticated:
        structlog.contextvars.bind_contextvars(user=user.get_username())
