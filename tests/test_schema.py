"""The OpenAPI schema and the docs page."""

import pytest
import yaml
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db


def test_schema_fetches_and_validates(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    validate_schema(schema)  # raises on an invalid OpenAPI 3 document
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/hubs/"])
    assert {"get", "delete"} <= set(paths["/api/v1/hubs/{id}/"])
    assert "202" in paths["/api/v1/hubs/{id}/"]["delete"]["responses"]
    assert "post" in paths["/api/v1/hubs/{id}/approve/"]
    assert "post" in paths["/api/v1/hubs/{id}/reject/"]
    for catalogue in ("hardware-options", "gpu-types", "images", "storage-options"):
        assert f"/api/v1/{catalogue}/" in paths
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])
    request_body = paths["/api/v1/hubs/"]["post"]["requestBody"]["content"]
    assert "HubRequestRequest" in str(request_body)


def test_schema_as_json(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    validate_schema(response.json())


def test_docs_page_lists_operations_without_a_cdn(client):
    page = client.get("/api/docs/").content.decode()
    assert "/api/v1/hubs/{id}/approve/" in page
    assert 'href="/api/schema/"' in page
    assert "cdn" not in page.lower() and "https://" not in page


def test_schema_generation_has_no_warnings(tmp_path):
    from django.core.management import call_command

    # --fail-on-warn turns drf-spectacular's guesses (unknown types, enum clashes) into errors.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))
    assert "/api/v1/hubs/" in (tmp_path / "s.yaml").read_text()
