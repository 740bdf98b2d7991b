"""python manage.py seeddemo: create or refresh the demo admin and researcher and print logins."""

import datetime
import os
import secrets
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from portal.hubs.models import GpuType
from portal.usage.models import GpuPrice, PriceList


class Command(BaseCommand):
    help = (
        "Create (or update) the demo users 'admin' (portal admin) and 'researcher' and print their "
        "logins. Passwords come from the options, else DEMO_ADMIN_PASSWORD / "
        "DEMO_RESEARCHER_PASSWORD, else new random ones. Also creates a demo price list when "
        "there is none, so usage pages show costs."
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
        if self._ensure_price_list():
            self.stdout.write("Demo price list created (edit it in the admin: Price lists).")

    def _ensure_price_list(self) -> bool:
        """A demo price list (per hour, GiB-month and GPU type) unless an admin made one."""
        if PriceList.objects.exists():
            return False
        prices = PriceList.objects.create(
            valid_from=datetime.date(2000, 1, 1),
            cpu_hour=Decimal("1.00"),
            memory_gib_hour=Decimal("0.25"),
            storage_gib_month=Decimal("3.00"),
            note="Demo prices from seeddemo",
        )
        for gpu_type in GpuType.objects.all():
            GpuPrice.objects.create(price_list=prices, gpu_type=gpu_type, gpu_hour=Decimal("60"))
        return True

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
