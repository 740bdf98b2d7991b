"""python manage.py seeddemo: create or refresh the demo admin and researcher and print logins."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = (
        "Create (or update) the demo users 'admin' (portal admin) and 'researcher' and print their "
        "logins. Passwords come from the options, else DEMO_ADMIN_PASSWORD / "
        "DEMO_RESEARCHER_PASSWORD, else new random ones."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--admin-password", default=os.environ.get("DEMO_ADMIN_PASSWORD"))
        parser.add_argument(
            "--researcher-password", default=os.environ.get("DEMO_RESEARCHER_PASSWORD")
        )

    @transaction.atomic
    def handle(self, *args, admin_password: str | None, researcher_password: str | None, **options):
        logins = [
            self._ensure("admin", admin_password, admin=True),
            self._ensure("researcher", researcher_password, admin=False),
        ]
        for username, password, role in logins:
            self.stdout.write(f"{role:<12} username: {username:<12} password: {password}")

    def _ensure(self, username: str, password: str | None, *, admin: bool) -> tuple[str, str, str]:
        password = password or secrets.token_urlsafe(12)
        user, _created = get_user_model().objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.org"}
        )
        user.is_staff = user.is_superuser = admin
        user.is_active = True
        user.set_password(password)
        user.save()
        return username, password, "Portal admin" if admin else "Researcher"
