"""Property-based API tests: schemathesis generates requests for every operation of
/api/schema/ and calls the portal's WSGI application in-process, as a portal admin (admin-scope
token) and as a researcher (write-scope token). Every answer must be documented (status code,
content type, body schema) and none may be a server error.

The number of examples per operation is bounded (SCHEMATHESIS_EXAMPLES, default 5) so the run
stays around two minutes on two cores.
"""

import os

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from portal.hubs.lifecycle import HubState
from tests.factories import AdminFactory, HubFactory, UserFactory, api_token

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "5"))


@pytest.fixture
def api_schema(db, settings_override):
    from portal.wsgi import application

    return schemathesis.openapi.from_wsgi("/api/schema/", application)


@pytest.fixture
def settings_override(settings):
    # The throttle would answer 429 to a burst of generated writes; it is tested elsewhere.
    settings.API_WRITE_RATE = ""
    # Calling the WSGI application directly would close the test's connection (and with it
    # its transaction) at the end of each request, as Django's test client prevents too.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield settings
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def auth(db, queued):
    """Users, hubs in several states and tokens; returns the header per caller."""
    researcher = UserFactory(username="researcher")
    admin = AdminFactory(username="operator")
    for state in (HubState.PENDING, HubState.RUNNING, HubState.SUSPENDED, HubState.FAILED):
        HubFactory(owner=researcher, slug=f"hub-{state}", state=state)
    return {
        "admin": {"Authorization": f"Token {api_token(admin)}"},
        "researcher": {"Authorization": f"Token {api_token(researcher)}"},
    }


schema = schemathesis.pytest.from_fixture("api_schema")


# No server errors; every status code, content type, header and body as documented. Invalid
# input is generated too, and must get a documented answer; whether the API is lenient with it
# (DRF turns 0 into "0", an empty filter means no filter) is not judged here.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@schema.parametrize()
@BOUNDED
def test_api_as_admin(case, auth):
    response = case.call_and_validate(headers=auth["admin"], checks=CHECKS)
    # The token is accepted: the generated requests reach the views, not just the auth layer.
    assert response.status_code != 401, response.text


@schema.parametrize()
@BOUNDED
def test_api_as_researcher(case, auth):
    response = case.call_and_validate(headers=auth["researcher"], checks=CHECKS)
    assert response.status_code != 401, response.text
