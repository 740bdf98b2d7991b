"""Portal sessions know their user (portal/accounts/sessions.py): ending one user's sessions,
when the provider no longer vouches for them, touches only theirs and costs one query however
many sessions the portal holds; sessions from before the change of engine stay signed in."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore as PlainSessionStore
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal.accounts import rights
from portal.accounts.models import UserSession
from portal.accounts.tasks import clear_expired_sessions
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def is_signed_in(client: Client) -> bool:
    return client.get(reverse("hubs:list")).status_code == 200


def test_signing_in_marks_the_session_with_its_user(alice):
    client = Client()
    assert client.get(reverse("hubs:list")).status_code == 302  # an anonymous session first
    client.force_login(alice)
    session = UserSession.objects.get(session_key=client.session.session_key)
    assert session.user == alice


def test_ending_a_users_sessions_leaves_everyone_elses(alice, bob, django_assert_max_num_queries):
    alices = [signed_in(alice) for _ in range(3)]
    bobs = [signed_in(bob)]
    others = [signed_in(UserFactory()) for _ in range(20)]

    with django_assert_max_num_queries(1):  # one DELETE by the indexed user column
        assert rights.end_sessions(alice.pk) == 3

    assert not any(is_signed_in(client) for client in alices)
    assert all(is_signed_in(client) for client in bobs + others)


def test_signing_out_and_in_again_follows_the_user(alice, bob):
    client = signed_in(alice)
    client.logout()
    client.force_login(bob)
    assert rights.end_sessions(alice.pk) == 0
    assert is_signed_in(client)


def test_deleting_a_user_deletes_their_sessions(alice):
    client = signed_in(alice)
    alice.delete()
    assert not UserSession.objects.exists()
    assert not is_signed_in(client)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sessions_from_before_the_engine_change_stay_signed_in():
    before = [("accounts", "0003_identity_by_issuer_and_subject"), ("sessions", "0001_initial")]
    after = [("accounts", "0004_sessions_know_their_user")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    user = old.get_model("auth", "User").objects.create(username="before-the-change")
    Session = old.get_model("sessions", "Session")
    encoder = PlainSessionStore()
    soon = timezone.now() + datetime.timedelta(days=1)
    Session.objects.create(
        session_key="a" * 32, session_data=encoder.encode({SESSION_KEY: str(user.pk)}),
        expire_date=soon,
    )  # fmt: skip
    Session.objects.create(
        session_key="b" * 32, session_data=encoder.encode({"anonymous": True}), expire_date=soon
    )
    Session.objects.create(
        session_key="c" * 32, session_data=encoder.encode({SESSION_KEY: str(user.pk)}),
        expire_date=timezone.now() - datetime.timedelta(days=1),
    )  # fmt: skip

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    carried = executor.loader.project_state(after).apps.get_model("accounts", "UserSession")
    assert dict(carried.objects.values_list("session_key", "user_id")) == {
        "a" * 32: user.pk,
        "b" * 32: None,
    }
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_the_daily_task_clears_expired_sessions_only(alice, bob):
    stale, fresh = signed_in(alice), signed_in(bob)
    UserSession.objects.filter(session_key=stale.session.session_key).update(
        expire_date=timezone.now() - datetime.timedelta(seconds=1)
    )
    assert clear_expired_sessions() == 1
    assert not is_signed_in(stale) and is_signed_in(fresh)
    assert list(UserSession.objects.values_list("user", flat=True)) == [bob.pk]
