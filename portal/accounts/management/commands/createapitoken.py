"""python manage.py createapitoken USERNAME [--admin] [--scope S] [--expires-days N] [--name N]."""

import datetime

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from portal.accounts import tokens
from portal.accounts.models import ApiToken


class Command(BaseCommand):
    help = (
        "Print a new API token for USERNAME, creating the user if needed; an older token of the "
        "user with the same name is revoked. --admin makes the user a portal admin."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--admin", action="store_true", help="Make the user a portal admin.")
        parser.add_argument(
            "--scope",
            choices=ApiToken.Scope.values,
            help="read, write or admin (default: write; admin with --admin).",
        )
        parser.add_argument(
            "--expires-days",
            type=int,
            help="Days until the token expires (default and maximum: API_TOKEN_MAX_DAYS, 90).",
        )
        parser.add_argument(
            "--name", default="createapitoken", help="The token's name (default: createapitoken)."
        )

    @transaction.atomic
    def handle(self, *args, username: str, admin: bool, **options) -> None:
        username = username.strip()
        if not username:
            raise CommandError("Give a username.")
        days = options.get("expires_days")
        if days is not None and days < 1:
            raise CommandError("--expires-days must be at least 1.")
        longest = tokens.max_lifetime()
        if longest is not None and days is not None and days > longest.days:
            raise CommandError(
                f"--expires-days {days} is beyond API_TOKEN_MAX_DAYS ({longest.days})."
            )
        scope = options.get("scope") or (ApiToken.Scope.ADMIN if admin else ApiToken.Scope.WRITE)
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()  # API only until someone sets a password
        if admin:
            # Portal admins approve requests and curate catalogues in the Django admin.
            user.is_staff = user.is_superuser = True
        user.save()
        name = options.get("name") or "createapitoken"
        # Re-running the command replaces the token it printed before.
        for old in ApiToken.objects.filter(user=user, name=name, revoked_at__isnull=True):
            tokens.revoke(old)
        expires_at = timezone.now() + datetime.timedelta(days=days) if days else None
        try:
            _, clear = tokens.issue(user, name=name, scope=scope, expires_at=expires_at)
        except tokens.TokenError as error:
            raise CommandError(str(error)) from None
        if created:
            self.stderr.write(f"Created user {username}.")
        self.stdout.write(clear)
