"""Linking an identity to an account that was not made by signing in: an admin's action only.

A sign-in whose username belongs to such an account (createapitoken, local, break-glass) is
refused and leaves a LinkRequest (portal/accounts/pipeline.py). A portal admin who knows the
person links it in the Django admin; the identity then signs in to that account.
"""

from __future__ import annotations

import structlog
from django.db import IntegrityError, transaction
from social_django.models import UserSocialAuth

from portal.accounts.models import LinkRequest
from portal.audit.log import record

log = structlog.get_logger(__name__)


class LinkError(ValueError):
    """The identity cannot be linked; the message says why."""


def link(link_request: LinkRequest, actor) -> UserSocialAuth:
    """Link the requested identity to its account and forget the request (audited)."""
    if actor is None or not actor.is_superuser:
        raise LinkError("Only portal admins link identities to accounts.")
    with transaction.atomic():
        request = LinkRequest.objects.select_for_update().filter(pk=link_request.pk).first()
        if request is None:
            raise LinkError("This link request is gone.")
        taken = UserSocialAuth.objects.filter(provider=request.provider, uid=request.uid).first()
        if taken is not None:
            raise LinkError(f"This identity signs in to {taken.user} already.")
        try:
            with transaction.atomic():
                social = UserSocialAuth.objects.create(
                    user=request.user,
                    provider=request.provider,
                    uid=request.uid,
                    id_key=request.id_key,
                    extra_data={},
                )
        except IntegrityError:
            raise LinkError("This identity was linked at the same moment.") from None
        record(
            "account.linked",
            request.user,
            actor=actor,
            provider=request.provider,
            uid=request.uid,
            claimed_username=request.claimed_username,
        )
        request.delete()
    log.info("account.linked", user=social.user_id, provider=social.provider, actor=actor.pk)
    return social
