"""The portal's session engine (SESSION_ENGINE): Django's database sessions, each row marked
with the user it signs in (portal.accounts.models.UserSession), so that ending a user's
sessions (a provider that no longer vouches for them) is one indexed query."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore


class SessionStore(DatabaseSessionStore):
    @classmethod
    def get_model_class(cls):
        from portal.accounts.models import UserSession

        return UserSession

    def create_model_instance(self, data: dict[str, Any]):
        session = super().create_model_instance(data)
        session.user_id = user_id_of(data)
        return session


def user_id_of(data: dict[str, Any]) -> int | None:
    """The signed-in user's primary key in a session's data, None before sign-in."""
    try:
        return int(data[SESSION_KEY])
    except (KeyError, TypeError, ValueError):
        return None
