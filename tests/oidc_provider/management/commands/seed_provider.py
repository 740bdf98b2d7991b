"""Create or update the provider's users, their groups and its clients from a JSON file."""

import json
from pathlib import Path

from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand
from django.db import transaction
from oauth2_provider.models import AccessToken, Application, RefreshToken

from tests.oidc_provider.models import EmailStatus


def seed(data: dict) -> None:
    """Users are matched by username, clients by client_id; groups are replaced, not added.

    A user entry may also rename the user (``rename_to``: the subject stays, as at a real
    provider), disable them (``active: false``, which also revokes every token the provider
    gave them, as providers do when they disable an account) and mark their e-mail address
    unverified (``email_verified: false``)."""
    with transaction.atomic():
        for entry in data.get("users", []):
            user, _ = User.objects.get_or_create(username=entry["username"])
            for field in ("email", "first_name", "last_name"):
                if field in entry:
                    setattr(user, field, entry[field])
            if "password" in entry:
                user.set_password(entry["password"])
            if "rename_to" in entry:
                user.username = entry["rename_to"]
            if "active" in entry:
                user.is_active = bool(entry["active"])
                if not user.is_active:
                    RefreshToken.objects.filter(user=user).delete()
                    AccessToken.objects.filter(user=user).delete()
            user.save()
            if "email_verified" in entry:
                EmailStatus.objects.update_or_create(
                    user=user, defaults={"verified": bool(entry["email_verified"])}
                )
            if "groups" in entry:
                user.groups.set(
                    [Group.objects.get_or_create(name=name)[0] for name in entry["groups"]]
                )
        for entry in data.get("clients", []):
            client = Application.objects.filter(client_id=entry["client_id"]).first()
            client = client or Application(client_id=entry["client_id"])
            client.name = entry.get("name", entry["client_id"])
            client.client_secret = entry["client_secret"]
            client.client_type = Application.CLIENT_CONFIDENTIAL
            client.authorization_grant_type = Application.GRANT_AUTHORIZATION_CODE
            client.redirect_uris = " ".join(entry.get("redirect_uris", []))
            client.post_logout_redirect_uris = " ".join(entry.get("post_logout_redirect_uris", []))
            client.algorithm = Application.RS256_ALGORITHM
            client.skip_authorization = entry.get("skip_authorization", False)
            client.save()


class Command(BaseCommand):
    help = "Create or update users, groups and clients from a JSON file (see README)."

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    def handle(self, *args, file: Path, **options):
        seed(json.loads(file.read_text()))
