"""A real SMTP server for tests: aiosmtpd on a free local port, with Django's SMTP backend
pointed at it (the `smtp_server` fixture, registered for every test by the root conftest)."""

import email
import email.policy

import pytest
from aiosmtpd.controller import Controller

from tests.support import free_port


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self):
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def messages(self):
        return [
            (env.rcpt_tos, email.message_from_bytes(env.content, policy=email.policy.default))
            for env in self.envelopes
        ]


@pytest.fixture
def smtp_server(settings):
    """Start aiosmtpd on 127.0.0.1 and point Django's SMTP backend at it."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.DEFAULT_FROM_EMAIL = "Hub on Demand <hubs@portal.example.org>"
    settings.PORTAL_URL = "https://portal.example.org"
    try:
        yield inbox
    finally:
        controller.stop()
