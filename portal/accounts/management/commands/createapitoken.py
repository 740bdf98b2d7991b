"""python manage.py createapitoken USERNAME [--admin]: print a new API token for the user."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = (
        "Print a new API token for USERNAME, creating the user if needed; any older token of the "
        "user stops working. --admin makes the user a portal admin."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--admin", action="store_true", help="Make the user a portal admin.")

    @transaction.atomic
    def handle(self, *args, username: str, admin: bool, **options) -> None:
        username = username.strip()
        if not username:
            raise CommandError("Give a username.")
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()  # API only until someone sets a password
        if admin:
            # Portal admins approve requests and curate catalogues in the Django admin.
            user.is_staff = user.is_superuser = True
        user.save()
        Token.objects.filter(user=user).delete()
        token = Token.objects.create(user=user)
        if created:
            self.stderr.write(f"Created user {username}.")
        self.stdout.write(token.key)
